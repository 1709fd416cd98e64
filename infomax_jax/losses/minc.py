"""MINC: mutual information non-contrastive loss (Guo et al., arXiv 2504.16667; LOSSES.md §3).

The paper's text and code are not available to us. The exact form here is the project's own
derivation from the mechanism the paper describes: the spectral contrastive loss (HaoChen et al.
2021, eq. 5) with its pairwise term rewritten, via E_{x,x'}[(z(x)·t(x'))²] = E_x[z(x)ᵀ Λ z(x)] with
Λ = E[t tᵀ], as a per-sample quadratic form against a running second moment of the targets.

For each pairing (z, t) ∈ {(z1, t2), (z2, t1)}, with Λ_q the running second moment of target view q

  Λ_q' = beta·Λ_q + (1 − beta)·sg(t_qᵀ t_q)/N                    (before the loss, stop-gradient)
  ℓ[n] = −2s·z[n]·sg(t[n]) + s²·z[n]ᵀ sg(T(Λ')) z[n],   loss = mean over n and the two pairings,

and the gradient of ℓ[n] with respect to z[n] is −2s·t[n] + 2s²·T(Λ') z[n]: the power-iteration step
of the spectral loss, with the pairwise comparisons replaced by Λ'.

`form='oja'`: T(Λ) = Λ. The fixed points are any basis of the top-P eigenspace (Oja's subspace
rule). `form='gha'`: T(Λ) = 2·tril(Λ, −1) + diag(Λ), the lower triangle with its strictly-lower
part doubled. Its quadratic form equals zᵀΛz, so the loss value is the Oja value, while the
gradient 2s²·T(Λ)z is evaluated through the stop-gradient identity 2q − sg(q), q = z·sg(T z). This
is Sanger's generalized Hebbian rule: dimension i is decorrelated only from dimensions j < i, so
the fixed points are the ordered eigenvectors. Doubling the off-diagonal weight keeps those fixed
points and makes the deflation of dimension i from j < i decay at rate Λ_ii + Λ_jj rather than Λ_ii.

Embeddings: as the spectral loss it rewrites, the raw projector outputs (hidden BatchNorm in the
projector) with rows clipped to norm ≤ sqrt(mu), online and target alike. (Under L2 normalisation
instead, the demo runs converged next to the collapsed stationary point z·t = zᵀΛz = 1, loss −1:
docs/results.md.)

Each pairing reads the second moment of its own target view, so with beta = 0 and online targets
the repulsive term is exactly the spectral loss's pairwise term including i = j (scaled 1/N²).

`target='ema'`: t1, t2 are the momentum encoder's embeddings of the two views (as EMI, momentum
`target_momentum` cosine-scheduled to 1). `target='online'`: no target network, t1 = sg(z1) and
t2 = sg(z2), the online network's own embeddings of each view under stop-gradient.
"""
import jax
import jax.numpy as jnp

import ml_collections

from infomax_jax.losses import linalg

FORMS = ('oja', 'gha')
TARGETS = ('ema', 'online')


# Raw projector outputs, clipped in the loss, and hidden BatchNorm: the spectral loss's setup.
L2_NORMALIZED_EMBEDDINGS = False
PROJECTOR_HIDDEN_BATCHNORM = True


def default_config():
  """Project defaults: s = 1 and mu = 1 give the spectral loss at its CIFAR value mu = 1."""
  return ml_collections.ConfigDict(dict(form='oja', target='ema', beta=0.9, scale=1.0, mu=1.0,
                                        target_momentum=0.99))


def uses_target_network(config):
  if config.target not in TARGETS:
    raise ValueError(f'unknown loss.target {config.target!r}; known: {", ".join(TARGETS)}')
  return config.target == 'ema'


def init_state(dim, config):
  """Λ_q = I/P, the second moment of isotropic unit-norm embeddings."""
  del config
  eye = jnp.eye(dim, dtype=float) / dim
  return {'Lam1': eye, 'Lam2': eye}


def transform(lam, form):
  """T(Λ) of the module docstring."""
  if form == 'oja':
    return lam
  return 2.0 * jnp.tril(lam, -1) + jnp.diag(jnp.diagonal(lam))


def _pairing(z, t, lam, config):
  """Per-sample attraction −2s·z·t and repulsion s²·zᵀT(Λ)z (gradient 2s²·T(Λ)z), batch means."""
  attraction = -2.0 * config.scale * jnp.mean(jnp.sum(z * t, axis=1))
  q = jnp.sum(z * jax.lax.stop_gradient(z @ transform(lam, config.form).T), axis=1)
  repulsion = config.scale**2 * jnp.mean(2.0 * q - jax.lax.stop_gradient(q))
  return attraction, repulsion


def loss_fn(views, state, config):
  if config.form not in FORMS:
    raise ValueError(f'unknown loss.form {config.form!r}; known: {", ".join(FORMS)}')
  z1, z2 = (linalg.clip_rows(linalg.as_float(views[k]), config.mu) for k in ('z1', 'z2'))
  if uses_target_network(config):
    t1, t2 = (linalg.clip_rows(linalg.as_float(views[k]), config.mu) for k in ('t1', 't2'))
  else:
    t1, t2 = z1, z2
  t1, t2 = jax.lax.stop_gradient((t1, t2))
  n = z1.shape[0]
  lam1 = linalg.forget(state['Lam1'], t1.T @ t1 / n, config.beta)
  lam2 = linalg.forget(state['Lam2'], t2.T @ t2 / n, config.beta)
  attraction_a, repulsion_a = _pairing(z1, t2, lam2, config)
  attraction_b, repulsion_b = _pairing(z2, t1, lam1, config)
  attraction = (attraction_a + attraction_b) / 2.0
  repulsion = (repulsion_a + repulsion_b) / 2.0
  metrics = {'attraction': attraction, 'repulsion': repulsion,
             'trace_Lam': (jnp.trace(lam1) + jnp.trace(lam2)) / 2.0}
  return attraction + repulsion, {'Lam1': lam1, 'Lam2': lam2}, metrics
