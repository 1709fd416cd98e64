"""Barlow Twins (Zbontar et al., ICML 2021, eqs. 1-2; official code semantics; LOSSES.md §4).

Each dimension is standardised over the global batch as BatchNorm1d(affine=False) does in
training mode (biased variance, epsilon 1e-5), c = ẑ1ᵀ ẑ2 / N, and

loss = scale_loss · [Σ_i (1 − c_ii)² + lambda · Σ_{i≠j} c_ij²]

(scale_loss 1 in the paper; solo-learn's CIFAR recipe 0.1).

The embeddings are the raw projector outputs: configs set `config.projector.l2_normalize = False`.
"""
import jax.numpy as jnp

import ml_collections

from infomax_jax.losses import linalg


# Raw projector outputs: the projector does not L2-normalise for this loss.
L2_NORMALIZED_EMBEDDINGS = False
# Hidden BatchNorm in the projector (with): as the official Barlow Twins projector.
PROJECTOR_HIDDEN_BATCHNORM = True

# solo-learn's CIFAR recipe for this loss (the source of its thesis Table 5.1 row, App. B.3):
# LARS with clip_lr, lr 0.3 per 256 examples, trust coefficient 0.02, weight decay 1e-4.
OPTIMIZER = dict(name='lars', peak_lr=0.3, base_batch_size=256, min_lr=0.0, lars_eta=0.02,
                 lars_clip_lr=True, weight_decay=1e-4)
# solo-learn's CIFAR projector 2048-2048-2048 and scale_loss 0.1 (the configs apply CIFAR_LOSS up
# to 64 px). ImageNet (paper §4): projector 8192-8192-8192, LARS lr 0.2 per 256, weight decay
# 1.5e-6, trust coefficient 0.001 (the configs apply the IMAGENET_ values above 64 px).
PROJECTOR_DIMS = (2048, 2048, 2048)
CIFAR_LOSS = dict(scale_loss=0.1)
IMAGENET_PROJECTOR_DIMS = (8192, 8192, 8192)
IMAGENET_OPTIMIZER = dict(name='lars', peak_lr=0.2, base_batch_size=256, lars_eta=0.001,
                          lars_clip_lr=False, weight_decay=1.5e-6)
# solo-learn's CIFAR augmentations (scripts/pretrain/cifar/augmentations/asymmetric.yaml),
# applied by the configs at CIFAR sizes (configs/common.py; larger images: Table B.1).
AUGMENTATIONS = dict(crop_scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1),
                     views=({'jitter': 0.8, 'gray': 0.2, 'blur': 0.0, 'solarize': 0.0},
                            {'jitter': 0.8, 'gray': 0.2, 'blur': 0.0, 'solarize': 0.2}))


def default_config():
  """The paper's off-diagonal weight λ = 5e-3, BatchNorm's epsilon and no loss scale."""
  return ml_collections.ConfigDict(dict(lambd=5e-3, bn_eps=1e-5, scale_loss=1.0))


def init_state(dim, config):
  del dim, config
  return {}


def _standardise(z, eps):
  zc = z - jnp.mean(z, axis=0)
  return zc / jnp.sqrt(jnp.mean(jnp.square(zc), axis=0) + eps)


def loss_fn(views, state, config):
  z1 = _standardise(linalg.as_float(views['z1']), config.bn_eps)
  z2 = _standardise(linalg.as_float(views['z2']), config.bn_eps)
  c = z1.T @ z2 / z1.shape[0]
  diagonal = jnp.diagonal(c)
  on_diagonal = jnp.sum(jnp.square(1.0 - diagonal))
  off_diagonal = jnp.sum(jnp.square(c)) - jnp.sum(jnp.square(diagonal))
  loss = config.scale_loss * (on_diagonal + config.lambd * off_diagonal)
  return loss, state, {'on_diagonal': on_diagonal, 'off_diagonal': off_diagonal}
