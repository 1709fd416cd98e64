"""Weighted cosine k-nearest-neighbour classifier on frozen features (InstDisc, solo-learn).

Features are L2-normalised; each of the k most similar training examples votes for its class with
weight exp(similarity / T), and the class scores are the summed votes. The weights are computed as
exp((similarity − s_max) / T), s_max the row's top similarity: the same scores up to a factor per
test example (so the same ranking), without float32 overflow at small T (exp(1 / T) overflows for
T < 0.0113). Similarities are computed
for `chunk_size` test examples against `chunk_size` training examples at a time, keeping a running
top-k, so memory stays O(chunk_size · (chunk_size + k)) whatever the data set size.
"""
import jax
import jax.numpy as jnp
import numpy as np


def _normalize(x):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _chunks(x, size, fill):
  pad = -len(x) % size
  x = np.concatenate([x, np.full((pad,) + x.shape[1:], fill, x.dtype)])
  return x.reshape((-1, size) + x.shape[1:])


def neighbours(train_x, test_x, k, chunk_size):
  """(similarities, indices) [n_test, k] of the k most cosine-similar training examples."""
  if k > len(train_x):
    raise ValueError(f'kNN with k={k} needs at least {k} training examples, got {len(train_x)}')
  train_x = np.asarray(train_x, np.float32)
  bank = jnp.asarray(_chunks(train_x, chunk_size, 0.0))
  ids = jnp.asarray(_chunks(np.arange(len(train_x), dtype=np.int32), chunk_size, -1))

  @jax.jit
  def query(q):
    q = _normalize(q)

    def merge(best, chunk):
      x, index = chunk
      sim = jnp.where(index >= 0, q @ _normalize(x).T, -jnp.inf)
      sims = jnp.concatenate([best[0], sim], axis=1)
      indices = jnp.concatenate([best[1], jnp.broadcast_to(index, sim.shape)], axis=1)
      top, order = jax.lax.top_k(sims, k)
      return (top, jnp.take_along_axis(indices, order, axis=1)), None

    start = (jnp.full((len(q), k), -jnp.inf), jnp.zeros((len(q), k), jnp.int32))
    return jax.lax.scan(merge, start, (bank, ids))[0]

  sims, indices = zip(*(jax.device_get(query(q)) for q in
                        _chunks(np.asarray(test_x, np.float32), chunk_size, 0.0)))
  n = len(test_x)
  return np.concatenate(sims)[:n], np.concatenate(indices)[:n]


def class_scores(similarities, indices, train_y, num_classes, k, temperature):
  """[n_test, classes] summed votes exp(sim / T) of the k nearest of the sorted neighbours, each
  row divided by the vote of its nearest neighbour exp(s_max / T)."""
  nearest = similarities[:, :k]
  weights = np.exp((nearest - nearest[:, :1]) / temperature)
  scores = np.zeros((len(similarities), num_classes), np.float32)
  np.add.at(scores, (np.arange(len(similarities))[:, None], train_y[indices[:, :k]]), weights)
  return scores
