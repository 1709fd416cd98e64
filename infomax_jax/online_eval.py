"""Online evaluation during pretraining (`config.online_eval`; docs/evaluation.md).

The online linear classifier (solo-learn's): a linear head on the stop-gradient encoder features
of both training views, trained inside the jitted train step by its own optimizer on the labels
of the pretraining stream; its parameters and optimizer state are `TrainState.online`, saved and
resumed with the rest. No gradient from it reaches the encoder or the projector.

`Evaluator` runs every `every_steps`: the head's top-1/top-5 on the test split and weighted kNN
(the probe job's protocol) of the current encoder against a bank of test-transformed train
images. Every host extracts the features of its own contiguous shard of each split; one jitted
call per batch returns them replicated, so every host computes the same numbers.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from infomax_jax import models

PREFIX = 'online/'


# Momentum of the standardisation's running statistics: the encoder moves while the head trains,
# so the evaluation's mean and variance follow the last ~10 steps' features.
STANDARDIZE_MOMENTUM = 0.9


class Head(nn.Module):
  """The classifier: nn.Linear with its default initialisation (solo-learn's); with `standardize`,
  first a BatchNorm without scale and bias (MAE's linear-probe head, He et al. 2022 App. A.2),
  the in-step counterpart of the probe job's feature standardisation."""
  num_classes: int
  standardize: bool = False

  @nn.compact
  def __call__(self, features, train=False):
    if self.standardize:
      features = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False,
                              momentum=STANDARDIZE_MOMENTUM, epsilon=1e-6,
                              name='standardize')(features)
    return nn.Dense(self.num_classes, kernel_init=models.pytorch_default_init,
                    bias_init=lambda key, shape, dtype=jnp.float32: jnp.zeros(shape, dtype),
                    name='linear')(features)


def _head(online):
  """The Head whose state `online` is (standardised iff it carries statistics)."""
  return Head(online['params']['linear']['bias'].shape[0], 'batch_stats' in online)


def _variables(online):
  return {k: online[k] for k in ('params', 'batch_stats') if k in online}


LR_SCHEDULES = ('cosine', 'constant')


def learning_rate(online_config, step, num_steps):
  """The head's lr at `step` of the run's `num_steps`: `lr` (solo-learn's classifier_lr 0.1)
  decayed to 0 by a half cosine over the run (`lr_schedule='cosine'`; solo-learn's classifier
  follows the run's warm-up + cosine schedule, the head here skips the warm-up), or constant."""
  if online_config.lr_schedule == 'constant':
    return jnp.asarray(online_config.lr, jnp.float32)
  return optax.cosine_decay_schedule(online_config.lr, num_steps)(step)


def optimizer(online_config, lr):
  """SGD with momentum and no weight decay at the rate `lr` (its state does not depend on it)."""
  return optax.sgd(lr, online_config.momentum)


def init(online_config, num_classes, feature_dim, rng):
  """TrainState.online: {'params', 'opt_state'} of a fresh head, and 'batch_stats' with
  `standardize`."""
  variables = Head(num_classes, online_config.standardize).init(
      rng, jnp.zeros((1, feature_dim), jnp.float32))
  return {**variables,
          'opt_state': optimizer(online_config, online_config.lr).init(variables['params'])}


def logits(online, features):
  """The head's logits for `features` [n, d] (evaluation: running statistics)."""
  return _head(online).apply(_variables(online), features)


def train_head(online, features, labels, online_config, *, step, num_steps):
  """One SGD step (at `learning_rate(online_config, step, num_steps)`) of the head on
  stop-gradient features [2b, d] of both views and their labels [2b]; returns (online, metrics)."""
  features = jax.lax.stop_gradient(features.astype(jnp.float32))
  head = _head(online)

  def loss_fn(params):
    out, updated = head.apply({**_variables(online), 'params': params}, features, train=True,
                              mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(out, labels).mean()
    return loss, (out, updated)

  (loss, (out, updated)), grads = jax.value_and_grad(loss_fn, has_aux=True)(online['params'])
  lr = learning_rate(online_config, step, num_steps)
  updates, opt_state = optimizer(online_config, lr).update(grads, online['opt_state'],
                                                           online['params'])
  accuracy = jnp.mean(jnp.argmax(out, -1) == labels) * 100
  return ({**online, **updated, 'params': optax.apply_updates(online['params'], updates),
           'opt_state': opt_state},
          {PREFIX + 'train_loss': loss, PREFIX + 'train_top1': accuracy, PREFIX + 'lr': lr})


def host_shard(examples, process_index, process_count):
  """(this host's contiguous shard of `examples`, validity mask): every host gets ceil(n / P)
  positions, those past the end repeat the last example and are masked out."""
  n = len(examples)
  if process_count == 1:   # the split itself: a cached split is not copied
    return examples, np.ones(n, bool)
  size = -(-n // process_count)
  positions = process_index * size + np.arange(size)
  return examples.subset(np.minimum(positions, n - 1)), positions < n


class Evaluator:
  """evaluate(state) → {'online/...': value} on the test split and a train-split kNN bank."""

  def __init__(self, config, model, mesh, train_examples, test_examples):
    from infomax_jax import evaluation  # pylint: disable=g-import-not-at-top  (TensorFlow)
    from infomax_jax import input_pipeline  # pylint: disable=g-import-not-at-top
    from infomax_jax import knn  # pylint: disable=g-import-not-at-top
    self._evaluation, self._input_pipeline, self._knn = evaluation, input_pipeline, knn
    self.config, self.online = config, config.online_eval
    self.num_classes = len(train_examples.class_names)
    bank = train_examples
    if 0 < self.online.bank_size < len(train_examples):
      picks = np.random.default_rng(config.seed).choice(len(train_examples),
                                                        self.online.bank_size, replace=False)
      bank = train_examples.subset(np.sort(picks))
    if len(bank) < max(self.online.knn_k):
      raise ValueError(f'online_eval: kNN with k={max(self.online.knn_k)} needs at least that '
                       f'many bank images, the train split has {len(bank)}')
    hosts, host = jax.process_count(), jax.process_index()
    self.splits = {'test': host_shard(test_examples, host, hosts),
                   'bank': host_shard(bank, host, hosts)}
    local = jax.local_device_count()
    self.local_batch = -(-self.online.batch_size // (hosts * local)) * local
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    self._sharded = sharded
    self._features = jax.jit(
        lambda variables, batch: (
            model.apply(variables, batch['image'], train=False)[0].astype(jnp.float32),
            batch['label'], batch['mask']),
        out_shardings=replicated)

  def features(self, variables, split):
    """(encoder features, labels) of every image of `split` ('test' or 'bank'), test transform,
    gathered from all hosts."""
    examples, valid = self.splits[split]
    dataset = self._input_pipeline.probe_dataset(examples, self.config.data, self.local_batch,
                                                 train=False)
    features, labels = [], []
    for i, batch in enumerate(self._input_pipeline.batches(dataset)):
      positions = i * self.local_batch + np.arange(self.local_batch)
      batch['mask'] = batch['mask'] & valid[np.minimum(positions, len(valid) - 1)]
      f, y, mask = jax.device_get(self._features(variables, jax.tree.map(
          lambda x: jax.make_array_from_process_local_data(self._sharded, np.asarray(x)),
          batch)))
      features.append(f[mask])
      labels.append(y[mask])
    return np.concatenate(features), np.concatenate(labels)

  def __call__(self, state):
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    test_x, test_y = self.features(variables, 'test')
    bank_x, bank_y = self.features(variables, 'bank')
    scores = np.asarray(logits(state.online, test_x))
    results = {f'{PREFIX}linear_{k}': v
               for k, v in self._evaluation.topk_accuracy(scores, test_y).items()}
    ks = tuple(self.online.knn_k)
    similarities, indices = self._knn.neighbours(bank_x, test_x, max(ks),
                                                 self.config.probe.knn.chunk_size)
    for k in ks:
      scores = self._knn.class_scores(similarities, indices, bank_y, self.num_classes, k,
                                      self.online.temperature)
      results.update({f'{PREFIX}knn_k{k}_{name}': v for name, v in
                      self._evaluation.topk_accuracy(scores, test_y).items()})
    return results
