"""EMI: explicit mutual information maximisation (Chang et al., arXiv 2409.04747; LOSSES.md §2).

The paper's method section and code are not available to us. The formulation here is the
project's own, built on the mechanism the paper describes: the Gaussian MI of second-order
statistics (its Theorem 1), a Taylor-series log-det on eigenvalue-rescaled matrices with the
eigenvalue scale tracked by a moving average, and a momentum (EMA) target encoder.

For each pairing (z, t) ∈ {(z1, sg(t2)), (z2, sg(t1))} with u = [z; t] ∈ R^{2P}:

  C' = lam·C + (1 − lam)·Cov_batch(u)      (running mean and covariance, CorInfoMax eqs. 4.3-4.5:
                                            batch part differentiable, carried C stop-gradient)
  I  = ½ [logdet(C'_11 + εI) + logdet(C'_22 + εI) − logdet(C' + εI)]          (Theorem 1)
  loss = −(I_a + I_b) / (2P)              (nats per embedding dimension; I is logged in nats)

`joint='sum_difference'` (the project's alternative) evaluates the joint term through the sum
and difference of the views: the rotation Q = [[I, I], [I, −I]]/√2 leaves log-dets, eps and
λ_max unchanged, and Q (C + εI) Qᵀ has the diagonal blocks Cov((z ± t)/√2) + εI =
½(C_11 + C_22 ± (C_12 + C_21)) + εI, its off-diagonal blocks vanishing whenever the pairing is
exchangeable (C_11 = C_22, C_12 symmetric). Dropping them,

  I = ½ [logdet(C_11 + εI) + logdet(C_22 + εI) − logdet(Cov((z+t)/√2) + εI) − logdet(Cov((z−t)/√2) + εI)]

equals Theorem 1's I there, with the same scale c for the series. Away from exchangeability (the
online network against its momentum target) the two differ: this form is not invariant to an
invertible map of z alone, and its difference term pulls the online embedding towards the
target's in the embedding's own coordinates, the alignment that Theorem 1's I does not ask for.

`logdet='exact'` evaluates the log-dets by Cholesky (λ̂_max below is then only a metric);
`logdet='taylor'` by the order-K series d·log c − Σ_k tr((I − M/c)^k)/k with
c = gamma·max(λ̂_max, λ_now): λ_now is the top eigenvalue of C' + εI from `power_steps` power
iterations warm-started at the previous eigenvector, λ̂_max its EMA (momentum `eig_momentum`,
initialised with the first estimate). The max is the project's guard: the series diverges for
eigenvalues above 2c, and the EMA alone lags a growing spectrum (on the demo, order 16: a loss
spike of −9.4 at step 6 that left the network constant).

The 1/P (the project's choice) puts the loss on the scale of CorInfoMax's
L_cov = −(logdet R1 + logdet R2)/P, whose thesis SGD learning rate the configs share.

State design: one running joint covariance (mean, C, λ̂_max, eigenvector) per pairing. The two
views are drawn from different augmentation distributions (blur 1.0/0.1, solarisation 0/0.2), so
(z1, t2) and (z2, t1) have different joint statistics, as CorInfoMax keeps one covariance per view.
Each pairing's single scale c serves its three log-dets: λ_max(C) bounds the top eigenvalue of
both diagonal blocks (interlacing), and with a common c the truncated series is additive over
block-diagonal matrices, so the Taylor I is exactly 0 when the views' cross-covariance vanishes.
"""
import jax
import jax.numpy as jnp

import ml_collections

from infomax_jax.losses import linalg

LOGDETS = ('exact', 'taylor')
JOINTS = ('concatenated', 'sum_difference')


# The projector L2-normalises its output for this loss (configs/common.py reads this).
L2_NORMALIZED_EMBEDDINGS = True
# Hidden BatchNorm in the projector (without): as CorInfoMax, whose thesis setup EMI shares.
PROJECTOR_HIDDEN_BATCHNORM = False


def default_config():
  """Project defaults. lam and cov_init are CorInfoMax's CIFAR-10 values (thesis Table B.2);
  order 16 and eps 1e-3 come from the demo trials (docs/results.md): at order 4 and eps 1e-8 the
  spectrum collapsed (effective rank 1.25 of 64)."""
  return ml_collections.ConfigDict(dict(
      joint='concatenated', logdet='taylor', order=16, gamma=1.05, power_steps=3,
      eig_momentum=0.9, lam=0.01, eps=1e-3, cov_init=1.0, target_momentum=0.99))


def uses_target_network(config):
  del config
  return True


def init_state(dim, config):
  vector = jax.random.normal(jax.random.key(0), (2 * dim,), float)
  pairing = {'mu': jnp.zeros((2 * dim,), float),
             'C': config.cov_init * jnp.eye(2 * dim, dtype=float),
             'lambda_max': jnp.zeros((), float),
             'eigenvector': vector / jnp.linalg.norm(vector)}
  return {'a': pairing, 'b': dict(pairing)}


def _pairing_mi(z, t, state, config):
  """I(z; t) of one pairing from its running joint covariance; returns (I, state', metrics)."""
  dim = z.shape[1]
  mu, _, cov = linalg.running_mean_cov(jnp.concatenate([z, t], axis=1), state['mu'], state['C'],
                                       config.lam)
  m = linalg.add_eps(cov, config.eps)
  estimate, eigenvector = linalg.power_iteration(m, state['eigenvector'], config.power_steps)
  lambda_max = jnp.where(state['lambda_max'] > 0,
                         linalg.forget(state['lambda_max'], estimate, config.eig_momentum),
                         estimate)
  if config.logdet == 'exact':
    logdet = linalg.logdet_cholesky
  else:
    # The series diverges for eigenvalues above 2c, and the EMA lags a growing spectrum.
    scale = config.gamma * jnp.maximum(lambda_max, estimate)
    logdet = lambda m: linalg.logdet_taylor(m, scale, config.order)
  logdet_z, logdet_t = logdet(m[:dim, :dim]), logdet(m[dim:, dim:])
  if config.joint == 'concatenated':
    logdet_joint = logdet(m)
  else:
    half_sum = 0.5 * (m[:dim, :dim] + m[dim:, dim:])            # ε stays on the diagonal
    half_cross = 0.5 * (m[:dim, dim:] + m[dim:, :dim])
    logdet_joint = logdet(half_sum + half_cross) + logdet(half_sum - half_cross)
  mi = 0.5 * (logdet_z + logdet_t - logdet_joint)
  new_state = jax.lax.stop_gradient({'mu': mu, 'C': cov,
                                     'lambda_max': lambda_max, 'eigenvector': eigenvector})
  metrics = {'logdet_z': logdet_z, 'logdet_joint': logdet_joint, 'lambda_max': lambda_max,
             'lambda_max_estimate': estimate}
  return mi, new_state, metrics


def loss_fn(views, state, config):
  if config.logdet not in LOGDETS:
    raise ValueError(f'unknown loss.logdet {config.logdet!r}; known: {", ".join(LOGDETS)}')
  if config.joint not in JOINTS:
    raise ValueError(f'unknown loss.joint {config.joint!r}; known: {", ".join(JOINTS)}')
  z1, z2 = linalg.as_float(views['z1']), linalg.as_float(views['z2'])
  t1, t2 = jax.lax.stop_gradient((linalg.as_float(views['t1']),
                                  linalg.as_float(views['t2'])))
  mi_a, state_a, metrics_a = _pairing_mi(z1, t2, state['a'], config)
  mi_b, state_b, metrics_b = _pairing_mi(z2, t1, state['b'], config)
  loss = -0.5 * (mi_a + mi_b) / z1.shape[1]
  metrics = {'mi_a': mi_a, 'mi_b': mi_b}
  metrics.update({f'{k}_a': v for k, v in metrics_a.items()})
  metrics.update({f'{k}_b': v for k, v in metrics_b.items()})
  return loss, {'a': state_a, 'b': state_b}, metrics
