"""VICReg (Bardes et al., ICLR 2022, eqs. 1-6; official code semantics; LOSSES.md §4).

loss = 25·mean((z1 − z2)²) + 25·[mean relu(1 − std(z1)) + mean relu(1 − std(z2))]/2
       + 1·[Σ_{i≠j} cov(z1)_ij² + Σ_{i≠j} cov(z2)_ij²]/P

with std = sqrt(var + 1e-4), var and cov unbiased (N − 1) over the global batch. The embeddings are
the raw projector outputs: configs set `config.projector.l2_normalize = False` for this loss.
"""
import jax.numpy as jnp

import ml_collections

from infomax_jax.losses import linalg


# Raw projector outputs: the projector does not L2-normalise for this loss.
L2_NORMALIZED_EMBEDDINGS = False
# Hidden BatchNorm in the projector (with): as the official VICReg expander.
PROJECTOR_HIDDEN_BATCHNORM = True

# solo-learn's CIFAR recipe for this loss (the source of its thesis Table 5.1 row, App. B.3):
# LARS with clip_lr, lr 0.3 per 256 examples, trust coefficient 0.02, weight decay 1e-4.
OPTIMIZER = dict(name='lars', peak_lr=0.3, base_batch_size=256, min_lr=0.0, lars_eta=0.02,
                 lars_clip_lr=True, weight_decay=1e-4)
# solo-learn's CIFAR projector 2048-2048-2048 and variance weight 25 on the *sum* of the two
# views' hinges, i.e. std_coeff 50 here (the official code, as this loss, averages them; the
# configs apply CIFAR_LOSS up to 64 px). ImageNet (paper §4.2): expander 8192-8192-8192, LARS lr
# 0.2 per 256, weight decay 1e-6, trust coefficient 0.001 (IMAGENET_ values, above 64 px).
PROJECTOR_DIMS = (2048, 2048, 2048)
CIFAR_LOSS = dict(std_coeff=50.0)
IMAGENET_PROJECTOR_DIMS = (8192, 8192, 8192)
IMAGENET_OPTIMIZER = dict(name='lars', peak_lr=0.2, base_batch_size=256, lars_eta=0.001,
                          lars_clip_lr=False, weight_decay=1e-6)
# solo-learn's CIFAR augmentations (scripts/pretrain/cifar/vicreg.yaml itself),
# applied by the configs at CIFAR sizes (configs/common.py; larger images: Table B.1).
AUGMENTATIONS = dict(crop_scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.2, 0.1),
                     views=({'jitter': 0.8, 'gray': 0.2, 'blur': 0.0, 'solarize': 0.1},
                            {'jitter': 0.8, 'gray': 0.2, 'blur': 0.0, 'solarize': 0.1}))


def default_config():
  """The paper's coefficients λ = μ = 25, ν = 1 and the std epsilon 1e-4."""
  return ml_collections.ConfigDict(dict(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0,
                                        std_eps=1e-4))


def init_state(dim, config):
  del dim, config
  return {}


def _variance_covariance(z, config):
  """The std hinge (eq. 1) and the off-diagonal covariance penalty (eq. 3) of one branch."""
  n, dim = z.shape
  zc = z - jnp.mean(z, axis=0)
  std = jnp.sqrt(jnp.sum(jnp.square(zc), axis=0) / (n - 1) + config.std_eps)
  cov = zc.T @ zc / (n - 1)
  off_diagonal = jnp.sum(jnp.square(cov)) - jnp.sum(jnp.square(jnp.diagonal(cov)))
  return jnp.mean(jnp.maximum(1.0 - std, 0.0)), off_diagonal / dim


def loss_fn(views, state, config):
  z1 = linalg.as_float(views['z1'])
  z2 = linalg.as_float(views['z2'])
  invariance_loss = jnp.mean(jnp.square(z1 - z2))
  std1, cov1 = _variance_covariance(z1, config)
  std2, cov2 = _variance_covariance(z2, config)
  std_loss = (std1 + std2) / 2.0
  cov_loss = cov1 + cov2
  loss = (config.sim_coeff * invariance_loss + config.std_coeff * std_loss
          + config.cov_coeff * cov_loss)
  metrics = {'invariance_loss': invariance_loss, 'std_loss': std_loss, 'cov_loss': cov_loss}
  return loss, state, metrics
