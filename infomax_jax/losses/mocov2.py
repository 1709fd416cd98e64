"""MoCo v2 (Chen et al., arXiv 2003.04297; He et al., CVPR 2020, eq. 1), symmetrised as solo-learn's
`mocov2plus` (`losses/mocov2plus.py`).

Queries q = normalise(z) of the online network, keys k = normalise(t) of the momentum key encoder
(EMA of the online network), and one queue of past keys per view, carried in the loss state:

  ℓ(q, k, Q) = −log[ exp(q·k/τ) / (exp(q·k/τ) + Σ_{n∈Q} exp(q·n/τ)) ]   averaged over the batch
  loss = [ℓ(q1, k2, Q2) + ℓ(q2, k1, Q1)] / 2

after which the keys of the **global** batch replace the oldest entries: k1 into Q1, k2 into Q2
(`queue_size` a multiple of the global batch). The queues start as random unit vectors.
"""
import jax
import jax.numpy as jnp

import ml_collections

from infomax_jax.losses import linalg

L2_NORMALIZED_EMBEDDINGS = False
PROJECTOR_HIDDEN_BATCHNORM = False
# solo-learn's CIFAR recipe (scripts/pretrain/cifar/mocov2plus.yaml): projector 2048-256 without
# BatchNorm, queue 32,768; SGD lr 0.3 per 256 images, momentum 0.9, weight decay 1e-4, warm-up from
# 3e-5 to a cosine to 0. ImageNet (MoCo v2): SGD lr 0.03 per 256, queue 65,536, momentum 0.999.
PROJECTOR_DIMS = (2048, 256)
OPTIMIZER = dict(name='sgd', peak_lr=0.3, base_batch_size=256, min_lr=0.0, warmup_init_lr=3e-5,
                 weight_decay=1e-4)
IMAGENET_OPTIMIZER = dict(name='sgd', peak_lr=0.03, base_batch_size=256, weight_decay=1e-4)


# MoCo v2 on ImageNet: queue 65,536, constant momentum 0.999; the experiment configs apply it
# above 64 px (and cut every queue to a multiple of the global batch).
IMAGENET_LOSS = dict(queue_size=65536, target_momentum=0.999, target_momentum_final=0.999)
# solo-learn's CIFAR augmentations (scripts/pretrain/cifar/augmentations/symmetric_weak.yaml),
# applied by the configs at CIFAR sizes (configs/common.py; larger images: Table B.1).
AUGMENTATIONS = dict(crop_scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.4, 0.1),
                     views=({'jitter': 0.8, 'gray': 0.2, 'blur': 0.5, 'solarize': 0.0},
                            {'jitter': 0.8, 'gray': 0.2, 'blur': 0.5, 'solarize': 0.0}))


def default_config():
  """τ = 0.2 (MoCo v2), queue 32,768 and key momentum 0.99 → 0.999 (solo-learn CIFAR; MoCo v2 on
  ImageNet: queue 65,536, a constant 0.999)."""
  return ml_collections.ConfigDict(dict(temperature=0.2, queue_size=32768, target_momentum=0.99,
                                        target_momentum_final=0.999))


def uses_target_network(config):
  del config
  return True


def init_state(dim, config):
  queue = jax.random.normal(jax.random.key(0), (2, config.queue_size, dim), dtype=float)
  return {'queue': queue / linalg.row_norms(queue), 'position': jnp.zeros((), jnp.int32)}


def info_nce(q, k, negatives, temperature):
  """Mean over the batch of −log softmax of the positive logit q·k among [q·k, q·negatives]."""
  positive = jnp.sum(q * k, axis=1, keepdims=True)
  logits = jnp.concatenate([positive, q @ negatives.T], axis=1) / temperature
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[:, 0])


def loss_fn(views, state, config):
  n = views['z1'].shape[0]
  if config.queue_size % n:
    raise ValueError(f'loss.queue_size={config.queue_size} must be a multiple of the global '
                     f'batch {n}')
  q1, q2 = (linalg.as_float(views[k]) for k in ('z1', 'z2'))
  q1, q2 = q1 / linalg.row_norms(q1), q2 / linalg.row_norms(q2)
  k1, k2 = (jax.lax.stop_gradient(linalg.as_float(views[k])) for k in ('t1', 't2'))
  k1, k2 = k1 / linalg.row_norms(k1), k2 / linalg.row_norms(k2)
  queue = jax.lax.stop_gradient(state['queue'])
  loss = (info_nce(q1, k2, queue[1], config.temperature)
          + info_nce(q2, k1, queue[0], config.temperature)) / 2.0
  position = state['position']
  queue = jax.lax.dynamic_update_slice(queue, jnp.stack([k1, k2]).astype(queue.dtype),
                                       (jnp.zeros_like(position), position,
                                        jnp.zeros_like(position)))
  new_state = {'queue': queue, 'position': (position + n) % config.queue_size}
  metrics = {'positive_similarity': (jnp.mean(jnp.sum(q1 * k2, 1))
                                     + jnp.mean(jnp.sum(q2 * k1, 1))) / 2.0}
  return loss, new_state, metrics
