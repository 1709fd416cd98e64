"""BYOL (Grill et al., NeurIPS 2020, eq. 2; solo-learn `losses/byol.py`).

The online network predicts the momentum target's projection of the other view:

  ℓ(p, t) = 2 − 2·cos(p, sg(t))   averaged over the batch,   loss = ℓ(p1, t2) + ℓ(p2, t1)

(the symmetrised L_θ + L̃_θ of eq. 2). p = predictor(projector(encoder(x))) of the online network,
t = projector(encoder(x)) of the EMA target (momentum `target_momentum` → `target_momentum_final`
on a cosine schedule, BYOL §3.2). The embeddings are the raw projector outputs; the loss normalises.
"""
import jax
import jax.numpy as jnp

import ml_collections

from infomax_jax.losses import linalg

L2_NORMALIZED_EMBEDDINGS = False
PROJECTOR_HIDDEN_BATCHNORM = True
# The predictor MLP (hidden size; output = the projector's): Linear → BN → ReLU → Linear.
PREDICTOR_HIDDEN_DIM = 4096
# solo-learn's CIFAR recipe (scripts/pretrain/cifar/byol.yaml): projector 4096-256; LARS lr 1.0
# per 256 images, trust coefficient 0.02, weight decay 1e-5, warm-up from 3e-5 to a cosine to 0.
# LARS with clip_lr and exclude_bias_n_norm, as solo-learn. ImageNet (BYOL App. C):
# LARS lr 0.2 per 256, weight decay 1.5e-6, momentum 0.996.
PROJECTOR_DIMS = (4096, 256)
OPTIMIZER = dict(name='lars', peak_lr=1.0, base_batch_size=256, min_lr=0.0, warmup_init_lr=3e-5,
                 lars_eta=0.02, lars_clip_lr=True, weight_decay=1e-5)
IMAGENET_OPTIMIZER = dict(name='lars', peak_lr=0.2, base_batch_size=256, lars_eta=0.001,
                          lars_clip_lr=False, weight_decay=1.5e-6)


# BYOL §3.2 on ImageNet; the experiment configs apply it above 64 px.
IMAGENET_LOSS = dict(target_momentum=0.996)
# solo-learn's CIFAR augmentations (scripts/pretrain/cifar/augmentations/asymmetric.yaml),
# applied by the configs at CIFAR sizes (configs/common.py; larger images: Table B.1).
AUGMENTATIONS = dict(crop_scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1),
                     views=({'jitter': 0.8, 'gray': 0.2, 'blur': 0.0, 'solarize': 0.0},
                            {'jitter': 0.8, 'gray': 0.2, 'blur': 0.0, 'solarize': 0.2}))


def default_config():
  """solo-learn's CIFAR momentum: 0.99 → 1.0 (BYOL on ImageNet: 0.996 → 1.0)."""
  return ml_collections.ConfigDict(dict(target_momentum=0.99, target_momentum_final=1.0))


def uses_target_network(config):
  del config
  return True


def init_state(dim, config):
  del dim, config
  return {}


def loss_fn(views, state, config):
  del config
  p1, p2 = linalg.as_float(views['p1']), linalg.as_float(views['p2'])
  t1, t2 = jax.lax.stop_gradient((linalg.as_float(views['t1']), linalg.as_float(views['t2'])))
  similarity_a = jnp.mean(linalg.cosine_similarity(p1, t2))
  similarity_b = jnp.mean(linalg.cosine_similarity(p2, t1))
  loss = (2.0 - 2.0 * similarity_a) + (2.0 - 2.0 * similarity_b)
  return loss, state, {'prediction_similarity': (similarity_a + similarity_b) / 2.0}
