"""Linear-probe job: frozen encoder features (before the projector) → linear classifier.

    python -m infomax_jax.probe --workdir=/tmp/demo [--encoders=trained,random] [--probe.epochs=100]

Restores only the encoder (params and BatchNorm statistics) from the latest orbax checkpoint of a
pretraining workdir and follows the thesis protocol (TRAINING.md): SGD momentum 0.9, no weight
decay, batch 256, cosine learning rate 0.2 → 0.002. With `probe.augment=False` (default) the
classifier trains on cached features of the test-transformed train split (fast path); with
`probe.augment=True` every epoch re-augments the train split (random resized crop + flip).
`random` evaluates a randomly initialised encoder of the same config: the baseline every
self-supervised number must beat. Top-1/top-5 are printed and merged into <workdir>/probe.json.
"""
import json
import os

from absl import app
from absl import flags
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax
import orbax.checkpoint as ocp

from infomax_jax import input_pipeline
from infomax_jax import models
from infomax_jax import train

FLAGS = flags.FLAGS


def default_config():
  """The thesis linear-probe protocol (TRAINING.md); override with --probe.<field>=<value>."""
  return ml_collections.ConfigDict(dict(
      epochs=100, batch_size=256, lr=0.2, min_lr=0.002, momentum=0.9, augment=False,
      feature_batch_size=500))


ENCODERS = ('trained', 'random')


def load_config(workdir):
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no config.json in {workdir}: not a pretraining workdir')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_encoder(config, workdir):
  """(variables of the encoder, checkpoint step) from the latest checkpoint in `workdir`."""
  manager = train.checkpoint_manager(workdir, read_only=True)
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {workdir}/checkpoints')
  model = models.build_model(config)
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, config.data.image_size,
                                                       config.data.image_size, 3)), train=False))
  replicated = jax.sharding.NamedSharding(train.make_mesh(), jax.sharding.PartitionSpec())
  item = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                      {'params': {'encoder': abstract['params']['encoder']},
                       'batch_stats': {'encoder': abstract['batch_stats']['encoder']}})
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
      partial_restore=True))).state
  return {'params': restored['params']['encoder'],
          'batch_stats': restored['batch_stats']['encoder']}, step


def random_encoder(config):
  encoder = models.build_encoder(config.model)
  size = config.data.image_size
  return encoder.init(jax.random.key(config.seed + 1), jnp.zeros((1, size, size, 3)), train=False)


def feature_extractor(config, mesh):
  encoder = models.build_encoder(config.model)
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(train.DATA_AXIS))
  apply = jax.jit(lambda v, x: encoder.apply(v, x, train=False), out_shardings=sharded)

  def extract(variables, dataset):
    features, labels = [], []
    for batch in dataset.as_numpy_iterator():
      f = apply(variables, train.global_batch(batch['image'], sharded))
      features.append(np.asarray(f)[batch['mask']])
      labels.append(batch['label'][batch['mask']])
    return np.concatenate(features), np.concatenate(labels)

  return extract


def make_classifier_step(num_classes, probe_config, num_steps):
  head = nn.Dense(num_classes, kernel_init=models.linear_init)
  schedule = optax.cosine_decay_schedule(probe_config.lr, num_steps,
                                         probe_config.min_lr / probe_config.lr)
  tx = optax.sgd(schedule, momentum=probe_config.momentum)

  @jax.jit
  def step(carry, features, labels, mask):
    params, opt_state = carry

    def loss_fn(p):
      ce = optax.softmax_cross_entropy_with_integer_labels(head.apply(p, features), labels)
      return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1)

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def init(rng, dim):
    params = head.init(rng, jnp.zeros((1, dim)))
    return params, tx.init(params)

  return head, init, step


def topk_accuracy(logits, labels, ks=(1, 5)):
  order = np.argsort(-logits, axis=1)
  return {f'top{k}': float(np.mean(np.any(order[:, :k] == labels[:, None], axis=1)) * 100)
          for k in ks}


def linear_probe(config, variables, train_examples, test_examples, mesh):
  """Trains the linear classifier on frozen features; returns test top-1/top-5 in %."""
  probe = config.probe
  extract = feature_extractor(config, mesh)
  batch = -(-probe.feature_batch_size // jax.device_count()) * jax.device_count()
  test_x, test_y = extract(variables, input_pipeline.probe_dataset(
      test_examples, config.data, batch, train=False))
  n = len(train_examples)
  steps_per_epoch = -(-n // probe.batch_size)
  head, init, step = make_classifier_step(len(train_examples.class_names), probe,
                                          probe.epochs * steps_per_epoch)
  rng = np.random.default_rng(config.seed)
  if not probe.augment:
    train_x, train_y = extract(variables, input_pipeline.probe_dataset(
        train_examples, config.data, batch, train=False))
  carry = init(jax.random.key(config.seed), test_x.shape[1])
  for epoch in range(probe.epochs):
    if probe.augment:
      train_x, train_y = extract(variables, input_pipeline.probe_dataset(
          train_examples, config.data, batch, train=True, seed=config.seed, epoch=epoch))
    order = rng.permutation(n)
    pad = steps_per_epoch * probe.batch_size - n
    order = np.concatenate([order, order[:pad]])
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    for s in range(steps_per_epoch):
      idx = order[s * probe.batch_size:(s + 1) * probe.batch_size]
      carry = step(carry, train_x[idx], train_y[idx],
                   mask[s * probe.batch_size:(s + 1) * probe.batch_size])
  logits = np.asarray(head.apply(carry[0], test_x))
  return topk_accuracy(logits, test_y)


def run_probe(config, workdir, encoders=ENCODERS):
  """Evaluates the requested encoders, merges the results into <workdir>/probe.json."""
  unknown = set(encoders) - set(ENCODERS)
  if unknown:
    raise ValueError(f'unknown encoder {sorted(unknown)[0]!r}; choose from {", ".join(ENCODERS)}')
  candidates = {}
  if 'trained' in encoders:
    candidates['trained'] = restore_encoder(config, workdir)
  if 'random' in encoders:
    candidates['random'] = random_encoder(config), 0
  train_examples = input_pipeline.load_split(config.data, config.data.train_split)
  test_examples = input_pipeline.load_split(config.data, config.data.test_split)
  mesh = train.make_mesh()
  path = os.path.join(workdir, 'probe.json')
  report = {}
  if os.path.isfile(path):
    with open(path) as f:
      report = json.load(f)
  for name, (variables, step) in candidates.items():
    result = linear_probe(config, variables, train_examples, test_examples, mesh)
    result.update(step=int(step), epochs=config.probe.epochs, augment=bool(config.probe.augment))
    report[f'linear/{name}'] = result
    if jax.process_index() == 0:
      print(f'linear probe, {name} encoder (step {step}): top-1 {result["top1"]:.2f}%  '
            f'top-5 {result["top5"]:.2f}%', flush=True)
  if jax.process_index() == 0:
    with open(path, 'w') as f:
      json.dump(report, f, indent=2)
  return report


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.ERROR)
  config = FLAGS.config or load_config(FLAGS.workdir)
  config.probe = FLAGS.probe
  run_probe(config, FLAGS.workdir, FLAGS.encoders)


def run():
  # Flags are defined here, not at import: configs import this module for default_config().
  config_flags.DEFINE_config_file('config', None, 'Pretraining config file; default: the '
                                  '<workdir>/config.json written by the pretraining job.')
  config_flags.DEFINE_config_dict('probe', default_config(), 'Probe protocol.')
  flags.DEFINE_string('workdir', None, 'Pretraining workdir (checkpoints/ and config.json).')
  flags.DEFINE_list('encoders', list(ENCODERS), 'Which encoders to evaluate.')
  flags.mark_flags_as_required(['workdir'])
  try:
    app.run(main)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f'error: {e}') from None


if __name__ == '__main__':
  run()
