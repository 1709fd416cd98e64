"""Spectral contrastive loss (HaoChen et al., NeurIPS 2021, eq. 5; official code; LOSSES.md §3).

Rows of z1, z2 longer than sqrt(mu) are rescaled to norm sqrt(mu), then

loss = ( −2/N Σ_n z1[n]·z2[n] + 1/(N(N−1)) Σ_{i≠j} (z1[i]·z2[j])² ) / mu

over the global batch. The official code clips rather than normalises, so configs set
`config.projector.l2_normalize = False` for this loss.
"""
import jax.numpy as jnp

import ml_collections

from infomax_jax.losses import linalg


# Raw projector outputs: the projector does not L2-normalise for this loss.
L2_NORMALIZED_EMBEDDINGS = False
# Hidden BatchNorm in the projector (with): as HaoChen et al.'s official projection MLP.
PROJECTOR_HIDDEN_BATCHNORM = True


def default_config():
  """mu = 1, the official CIFAR value."""
  return ml_collections.ConfigDict(dict(mu=1.0))


def init_state(dim, config):
  del dim, config
  return {}


def loss_fn(views, state, config):
  z1 = linalg.clip_rows(linalg.as_float(views['z1']), config.mu)
  z2 = linalg.clip_rows(linalg.as_float(views['z2']), config.mu)
  n = z1.shape[0]
  attraction = -2.0 * jnp.mean(jnp.sum(z1 * z2, axis=1))
  squares = jnp.square(z1 @ z2.T)
  repulsion = (jnp.sum(squares) - jnp.sum(jnp.diagonal(squares))) / (n * (n - 1))
  loss = (attraction + repulsion) / config.mu
  return loss, state, {'attraction': attraction, 'repulsion': repulsion}
