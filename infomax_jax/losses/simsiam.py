"""SimSiam (Chen & He, CVPR 2021, eqs. 1-3; solo-learn `losses/simsiam.py`).

  D(p, z) = −cos(p, sg(z))   averaged over the batch,   loss = D(p1, z2)/2 + D(p2, z1)/2

with p = predictor(z), z = projector(encoder(x)) of the same network (no target network); the
stop-gradient on z is the method. The projector ends in BatchNorm without scale and offset (the
paper's §4.4 / solo-learn); the loss normalises the raw projector outputs.
"""
import jax
import jax.numpy as jnp

import ml_collections

from infomax_jax.losses import linalg

L2_NORMALIZED_EMBEDDINGS = False
PROJECTOR_HIDDEN_BATCHNORM = True
PROJECTOR_OUTPUT_BATCHNORM = True
PREDICTOR_HIDDEN_DIM = 512
# solo-learn's CIFAR recipe (scripts/pretrain/cifar/simsiam.yaml): projector 2048-2048-2048,
# predictor 512; SGD lr 0.5 per 256 images, momentum 0.9, weight decay 1e-5, warm-up from 3e-5 to
# a cosine to 0, the predictor at the fixed peak rate (solo-learn's static_lr; SimSiam §4.2).
# ImageNet (SimSiam §4): SGD lr 0.05 per 256, weight decay 1e-4.
PROJECTOR_DIMS = (2048, 2048, 2048)
OPTIMIZER = dict(name='sgd', peak_lr=0.5, base_batch_size=256, min_lr=0.0, warmup_init_lr=3e-5,
                 weight_decay=1e-5, predictor_fixed_lr=True)
IMAGENET_OPTIMIZER = dict(name='sgd', peak_lr=0.05, base_batch_size=256, weight_decay=1e-4)
# solo-learn's CIFAR augmentations (scripts/pretrain/cifar/augmentations/symmetric_weak.yaml),
# applied by the configs at CIFAR sizes (configs/common.py; larger images: Table B.1).
AUGMENTATIONS = dict(crop_scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.4, 0.1),
                     views=({'jitter': 0.8, 'gray': 0.2, 'blur': 0.5, 'solarize': 0.0},
                            {'jitter': 0.8, 'gray': 0.2, 'blur': 0.5, 'solarize': 0.0}))


def default_config():
  return ml_collections.ConfigDict()


def init_state(dim, config):
  del dim, config
  return {}


def loss_fn(views, state, config):
  del config
  p1, p2 = linalg.as_float(views['p1']), linalg.as_float(views['p2'])
  z1, z2 = jax.lax.stop_gradient((linalg.as_float(views['z1']), linalg.as_float(views['z2'])))
  similarity = (jnp.mean(linalg.cosine_similarity(p1, z2))
                + jnp.mean(linalg.cosine_similarity(p2, z1))) / 2.0
  return -similarity, state, {'prediction_similarity': similarity}
