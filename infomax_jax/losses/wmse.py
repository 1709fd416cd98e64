"""W-MSE (Ermolov et al., ICML 2021, eqs. 3-6; official code htdt/self-supervised `w_mse.py`,
`whitening.py`).

For each of `w_iter` iterations the global batch is split by a random permutation into sub-batches
of `w_size` images; each view's sub-batch of embeddings is whitened on its own,

  W(x) = (x − mean x) L⁻ᵀ,   L Lᵀ = (1 − w_eps)·Cov(x) + w_eps·I,   Cov with N − 1   (Cholesky)

and the loss is the MSE of the L2-normalised whitened views, 2 − 2·cos(W(z1)[n], W(z2)[n]), averaged
over the images and the iterations, with gradients through both views as in the official code
(solo-learn detaches the second view). The permutations are drawn from a key carried in the loss
state, so a run is a function of its seed and resumes exactly. Whitening needs a non-singular
covariance: `w_size` must exceed the embedding size, and collapsed embeddings (Cov = 0 with
w_eps = 0) give a non-finite loss, which the train step's divergence guard reports in one line.
"""
import jax
import jax.numpy as jnp

import ml_collections

from infomax_jax.losses import linalg

L2_NORMALIZED_EMBEDDINGS = False
PROJECTOR_HIDDEN_BATCHNORM = True
# solo-learn's CIFAR recipe (scripts/pretrain/cifar/wmse.yaml): projector 1024-64; Adam lr 2e-3,
# weight decay 1e-6 (L2, added to the gradient), warm-up from 0 to a cosine to 0. The official code:
# Adam lr 3e-3 with step decay; ImageNet-100: lr 2e-3, embedding 128, w_size 256.
PROJECTOR_DIMS = (1024, 64)
OPTIMIZER = dict(name='adam', peak_lr=2e-3, base_batch_size=0, min_lr=0.0, warmup_init_lr=0.0,
                 weight_decay=1e-6)
# solo-learn's CIFAR augmentations (scripts/pretrain/cifar/wmse.yaml itself),
# applied by the configs at CIFAR sizes (configs/common.py; larger images: Table B.1).
AUGMENTATIONS = dict(crop_scale=(0.2, 1.0), jitter=(0.8, 0.8, 0.8, 0.2),
                     views=({'jitter': 0.8, 'gray': 0.2, 'blur': 0.0, 'solarize': 0.0},
                            {'jitter': 0.8, 'gray': 0.2, 'blur': 0.0, 'solarize': 0.0}))


def default_config():
  """The official CIFAR values: sub-batches of 128, one iteration, no shrinkage."""
  return ml_collections.ConfigDict(dict(w_size=128, w_iter=1, w_eps=0.0))


def init_state(dim, config):
  del dim, config
  return {'key': jax.random.key_data(jax.random.key(0))}


def whiten(x, eps):
  """(x − mean) L⁻ᵀ with L the Cholesky factor of the shrunk covariance (official Whitening2d)."""
  n, dim = x.shape
  x = x - jnp.mean(x, axis=0)
  eye = jnp.eye(dim, dtype=x.dtype)
  cov = (1.0 - eps) * (x.T @ x) / (n - 1) + eps * eye
  inverse_factor = jax.scipy.linalg.solve_triangular(jnp.linalg.cholesky(cov), eye, lower=True)
  return x @ inverse_factor.T


def loss_fn(views, state, config):
  z1, z2 = linalg.as_float(views['z1']), linalg.as_float(views['z2'])
  n, dim = z1.shape
  if n % config.w_size or config.w_size <= dim:
    raise ValueError(f'loss.w_size={config.w_size} must divide the global batch {n} and exceed '
                     f'the embedding size {dim}')
  key = jax.random.wrap_key_data(state['key'])
  loss = 0.0
  for _ in range(config.w_iter):
    key, draw = jax.random.split(key)
    groups = jax.random.permutation(draw, n).reshape(-1, config.w_size)
    w1 = jax.vmap(whiten, (0, None))(z1[groups], config.w_eps).reshape(n, dim)
    w2 = jax.vmap(whiten, (0, None))(z2[groups], config.w_eps).reshape(n, dim)
    loss += 2.0 - 2.0 * jnp.mean(linalg.cosine_similarity(w1, w2))
  loss /= config.w_iter
  return loss, {'key': jax.random.key_data(key)}, {}
