"""Exact t-SNE (van der Maaten & Hinton, 2008) in JAX, for the few thousand points of a figure.

Optimiser as in scikit-learn's exact method: Gaussian affinities on squared Euclidean distances
with per-point bandwidths from a binary search on the perplexity, early exaggeration with momentum
0.5 for the first 250 iterations, then momentum 0.8, delta-bar-delta gains (min 0.01), learning
rate 'auto' = max(n / exaggeration / 4, 50) and N(0, 1e-4) random initialisation. O(n²) memory and
time per iteration: meant for n ≤ a few thousand.
"""
import jax
import jax.numpy as jnp
import numpy as np

EXPLORATION_ITERATIONS = 250


def _squared_distances(x):
  sq = jnp.sum(x * x, axis=1)
  return jnp.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)


@jax.jit
def conditional_affinities(x, perplexity):
  """Rows p(j | i) of Gaussian affinities, each bandwidth bisected to the given perplexity."""
  n = x.shape[0]
  d2 = _squared_distances(x)
  d2 = d2 - jnp.min(jnp.where(jnp.eye(n, dtype=bool), jnp.inf, d2), axis=1, keepdims=True)
  off_diagonal = ~jnp.eye(n, dtype=bool)
  target = jnp.log(perplexity)

  def conditional(beta):
    p = jnp.where(off_diagonal, jnp.exp(-d2 * beta[:, None]), 0.0)
    total = jnp.maximum(jnp.sum(p, axis=1, keepdims=True), 1e-12)
    p = p / total
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, 1e-30)), 0.0), axis=1)
    return p, entropy

  def bisect(_, bounds):
    low, high = bounds
    beta = jnp.where(jnp.isinf(high), low * 2 + (low == 0), (low + high) / 2)
    too_flat = conditional(beta)[1] > target   # entropy too high: narrow the Gaussian
    return jnp.where(too_flat, beta, low), jnp.where(too_flat, high, beta)

  low, high = jax.lax.fori_loop(0, 100, bisect, (jnp.zeros(n), jnp.full(n, jnp.inf)))
  return conditional(jnp.where(jnp.isinf(high), low, (low + high) / 2))[0]


@jax.jit
def _optimise(p, y, learning_rate, exaggeration, iterations):
  def iterate(i, state):
    y, update, gains = state
    early = i < EXPLORATION_ITERATIONS
    num = 1.0 / (1.0 + _squared_distances(y))
    num = num * (1.0 - jnp.eye(y.shape[0]))
    q = jnp.maximum(num / jnp.sum(num), 1e-12)
    pq = (jnp.where(early, exaggeration, 1.0) * p - q) * num
    grad = 4.0 * (jnp.sum(pq, axis=1, keepdims=True) * y - pq @ y)
    gains = jnp.maximum(jnp.where(update * grad < 0, gains + 0.2, gains * 0.8), 0.01)
    update = jnp.where(early, 0.5, 0.8) * update - learning_rate * gains * grad
    return y + update, update, gains

  return jax.lax.fori_loop(0, iterations, iterate, (y, jnp.zeros_like(y), jnp.ones_like(y)))[0]


def tsne(x, perplexity=50.0, exaggeration=12.0, iterations=1000, seed=0):
  """[n, d] points → [n, 2] embedding (numpy)."""
  x = np.asarray(x, np.float32)
  n = len(x)
  perplexity = min(perplexity, (n - 1) / 3)
  p = conditional_affinities(jnp.asarray(x), perplexity)
  p = jnp.maximum((p + p.T) / (2 * n), 1e-12)
  y = 1e-4 * jax.random.normal(jax.random.key(seed), (n, 2))
  return np.asarray(_optimise(p, y, max(n / exaggeration / 4, 50.0), exaggeration, iterations))
