"""CorInfoMax loss (thesis §4.2, Algorithm 1; LOSSES.md §1).

loss = alpha · mean((z1 − z2)²) − [logdet(R1' + εI) + logdet(R2' + εI)] / P

with R_q' the running covariance of view q under forgetting factor `lam` (eq. 4.3, λ weights the
old estimate) around the running mean (eq. 4.5). The state (means, covariances and the metric-only
cross-covariance R12 used for the LDMI measure of eq. 3.6) is carried in the TrainState.
"""
import jax
import jax.numpy as jnp

import ml_collections

from infomax_jax.losses import linalg


# The projector L2-normalises its output for this loss (configs/common.py reads this).
L2_NORMALIZED_EMBEDDINGS = True
# Hidden BatchNorm in the projector (without): the official CorInfoMax CIFAR/Tiny/IN-100 projector
# has none (TRAINING.md).
PROJECTOR_HIDDEN_BATCHNORM = False


def default_config():
  """Thesis CIFAR-10 values (Table B.2); eps = 1e-8 in every thesis run."""
  return ml_collections.ConfigDict(dict(alpha=250.0, lam=0.01, eps=1e-8, cov_init=1.0))


def init_state(dim, config):
  eye = config.cov_init * jnp.eye(dim, dtype=float)
  zero = jnp.zeros((dim,), float)
  return {'mu1': zero, 'mu2': zero, 'R1': eye, 'R2': eye,
          'R12': jnp.zeros((dim, dim), float)}


def loss_fn(views, state, config):
  z1 = linalg.as_float(views['z1'])
  z2 = linalg.as_float(views['z2'])
  n, dim = z1.shape
  mu1, zc1, r1 = linalg.running_mean_cov(z1, state['mu1'], state['R1'], config.lam)
  mu2, zc2, r2 = linalg.running_mean_cov(z2, state['mu2'], state['R2'], config.lam)
  r12 = linalg.forget(state['R12'], jax.lax.stop_gradient(zc1.T @ zc2) / n, config.lam)

  logdet1 = linalg.logdet_cholesky(linalg.add_eps(r1, config.eps))
  logdet2 = linalg.logdet_cholesky(linalg.add_eps(r2, config.eps))
  cov_loss = -(logdet1 + logdet2) / dim
  invariance_loss = jnp.mean(jnp.square(z1 - z2))
  loss = config.alpha * invariance_loss + cov_loss

  new_state = jax.lax.stop_gradient({'mu1': mu1, 'mu2': mu2, 'R1': r1, 'R2': r2, 'R12': r12})
  metrics = {'cov_loss': cov_loss, 'invariance_loss': invariance_loss,
             'logdet_R1': logdet1, 'logdet_R2': logdet2}
  return loss, new_state, metrics


def diagnostic_covariances(state, z1, z2):
  """The running covariances the thesis plots LDMI and the spectrum from (Fig. 5.1, 5.3)."""
  del z1, z2
  return state['R1'], state['R2'], state['R12']
