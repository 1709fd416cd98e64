"""SimCLR's NT-Xent loss (Chen et al., ICML 2020, eq. 1; LOSSES.md §4).

The 2N L2-normalised embeddings of the global batch are the anchors; each anchor's positive is the
other view of its image and its 2N − 2 negatives are every other embedding:

ℓ(i, j) = −log[ exp(sim(z_i, z_j)/τ) / Σ_{k≠i} exp(sim(z_i, z_k)/τ) ],   loss = mean over the
2N anchors (both orders of every positive pair, so the loss is symmetric).
"""
import jax
import jax.numpy as jnp

import ml_collections

from infomax_jax.losses import linalg


# The projector L2-normalises its output for this loss (configs/common.py reads this).
L2_NORMALIZED_EMBEDDINGS = True
# Hidden BatchNorm in the projector (with): as the SimCLR (v2) / solo-learn projection head;
# without it SGD at the thesis lr collapses the ReLU projector.
PROJECTOR_HIDDEN_BATCHNORM = True


# ImageNet temperature (LOSSES.md §4); the experiment configs apply it above 64 px.
IMAGENET_LOSS = dict(temperature=0.1)
# solo-learn's CIFAR recipe (scripts/pretrain/cifar/simclr.yaml): projector 2048-256, LARS with
# clip_lr, lr 0.4 per 256, weight decay 1e-4, trust coefficient 0.02, τ 0.2. ImageNet (SimCLR
# §B.6): projector 2048-128, LARS lr 0.3 per 256, weight decay 1e-6, trust coefficient 0.001.
PROJECTOR_DIMS = (2048, 256)
OPTIMIZER = dict(name='lars', peak_lr=0.4, base_batch_size=256, min_lr=0.0, lars_eta=0.02,
                 lars_clip_lr=True, weight_decay=1e-4)
IMAGENET_PROJECTOR_DIMS = (2048, 128)
IMAGENET_OPTIMIZER = dict(name='lars', peak_lr=0.3, base_batch_size=256, lars_eta=0.001,
                          lars_clip_lr=False, weight_decay=1e-6)
# solo-learn's CIFAR augmentations (scripts/pretrain/cifar/augmentations/symmetric.yaml),
# applied by the configs at CIFAR sizes (configs/common.py; larger images: Table B.1).
AUGMENTATIONS = dict(crop_scale=(0.08, 1.0), jitter=(0.8, 0.8, 0.8, 0.2),
                     views=({'jitter': 0.8, 'gray': 0.2, 'blur': 0.5, 'solarize': 0.0},
                            {'jitter': 0.8, 'gray': 0.2, 'blur': 0.5, 'solarize': 0.0}))


def default_config():
  """τ = 0.2, the CIFAR value (LOSSES.md §4); 0.1 for ImageNet."""
  return ml_collections.ConfigDict(dict(temperature=0.2))


def init_state(dim, config):
  del dim, config
  return {}


def loss_fn(views, state, config):
  z = linalg.as_float(jnp.concatenate([views['z1'], views['z2']], axis=0))
  z = z / linalg.row_norms(z)
  n = z.shape[0] // 2
  logits = z @ z.T / config.temperature
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
  positive = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
  positive_logits = jnp.take_along_axis(logits, positive[:, None], axis=1)[:, 0]
  loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - positive_logits)
  return loss, state, {'positive_similarity': jnp.mean(positive_logits) * config.temperature}
