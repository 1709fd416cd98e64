"""Evaluation job: linear probe, weighted kNN and semi-supervised fine-tuning of an encoder.

    python -m infomax_jax.probe --workdir=/tmp/demo [--evaluations=linear,knn,semi]
        [--encoders=trained,random] [--step=latest|N|all] [--force] [--noplots]
        [--probe.<field>=<value> ...]

Evaluates the encoder (features before the projector) of a pretraining workdir's checkpoints —
the latest, one step, or every saved step — and the encoder as the run initialised it (`random`,
reported as step 0): the baseline every self-supervised number must beat. Protocols (TRAINING.md,
docs/evaluation.md):

  linear  linear classifier on frozen features, 100 epochs, batch 256, SGD momentum 0.9, no weight
          decay, cosine lr 0.2 → 0.002 (`probe.schedule=step`: ImageNet-1K, 25 ÷10 every 20
          epochs), on a fresh random-resized-crop + flip view of every train image in every
          epoch (the thesis protocol); `probe.augment=False`: on features of the
          test-transformed train split computed once, reported as `linear_cached`
  knn     weighted cosine kNN, k = 20 and 200, T = 0.07 (knn.py)
  semi    fine-tuning encoder + head on 1 % and 10 % of the labels (finetune.py)

The protocol is the pretraining config's `probe` section (configs/imagenet1k.py: the step
schedule from 25); each `--probe.<field>=<value>` replaces that one field. Top-1/top-5 are merged into <workdir>/probe.json, keyed evaluation → encoder → step; results whose
protocol is unchanged are not recomputed unless --force. The figures of plots.py are then written
into the workdir.
"""
import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax

from infomax_jax import cli
from infomax_jax import evaluation
from infomax_jax import finetune
from infomax_jax import input_pipeline
from infomax_jax import knn
from infomax_jax import models
from infomax_jax import plots
from infomax_jax import evaluation_config
from infomax_jax import train
from infomax_jax import tsne

FLAGS = flags.FLAGS
ENCODERS = ('trained', 'random')
EVALUATIONS = ('linear', 'knn', 'semi')
SCHEDULES = ('cosine', 'step')


def validate_probe_config(probe):
  if probe.schedule not in SCHEDULES:
    raise ValueError(f'unknown probe.schedule {probe.schedule!r}; choose from '
                     f'{", ".join(SCHEDULES)}')
  semi = probe.semi
  if len(semi.fractions) != len(semi.head_lrs):
    raise ValueError(f'probe.semi.fractions {tuple(semi.fractions)} and probe.semi.head_lrs '
                     f'{tuple(semi.head_lrs)} must have the same length')
  if not all(0 < f <= 1 for f in semi.fractions):
    raise ValueError(f'probe.semi.fractions {tuple(semi.fractions)} must be in (0, 1]')
  if semi.select not in ('last', 'best'):
    raise ValueError(f"probe.semi.select={semi.select!r}: expected 'last' or 'best'")
  if semi.subset_files and len(semi.subset_files) != len(semi.fractions):
    raise ValueError(f'probe.semi.subset_files needs one file per fraction '
                     f'{tuple(semi.fractions)}, got {len(semi.subset_files)}')
  if semi.batch_size <= 0 or semi.batch_size % jax.device_count():
    raise ValueError(f'probe.semi.batch_size={semi.batch_size} must be a positive multiple of '
                     f'the {jax.device_count()} devices')


def protocols(probe, evaluations):
  """{report name: (evaluation, protocol)}; a stored result counts only if its protocol matches."""
  todo = {}
  if 'linear' in evaluations:
    protocol = dict(epochs=probe.epochs, batch_size=probe.batch_size, momentum=probe.momentum,
                    schedule=probe.schedule, standardize=bool(probe.standardize),
                    augment=bool(probe.augment))
    protocol.update(dict(lr=probe.lr, min_lr=probe.min_lr) if probe.schedule == 'cosine' else
                    dict(lr=probe.step_lr, step_epochs=probe.step_epochs))
    todo['linear' if probe.augment else 'linear_cached'] = ('linear', protocol)
  if 'knn' in evaluations:
    for k in probe.knn.k:
      todo[f'knn_k{k}'] = ('knn', dict(k=int(k), temperature=probe.knn.temperature,
                                       ties='expected'))   # evaluation.topk_accuracy
  if 'semi' in evaluations:
    semi = probe.semi
    files = tuple(semi.subset_files) or ('',) * len(semi.fractions)
    for fraction, head_lr, subset_file in zip(semi.fractions, semi.head_lrs, files):
      todo[f'semi_{fraction * 100:g}pct'] = ('semi', dict(
          fraction=fraction, head_lr=head_lr, encoder_lr=semi.encoder_lr, epochs=semi.epochs,
          batch_size=semi.batch_size, momentum=semi.momentum, step_epochs=semi.step_epochs,
          head_factor=semi.head_factor, encoder_factor=semi.encoder_factor,
          subset_seed=semi.subset_seed, select=semi.select, subset_file=subset_file))
  return todo


def linear_schedule(probe, steps_per_epoch):
  if probe.schedule == 'step':
    return optax.exponential_decay(probe.step_lr, probe.step_epochs * steps_per_epoch, 0.1,
                                   staircase=True)
  return optax.cosine_decay_schedule(probe.lr, probe.epochs * steps_per_epoch,
                                     probe.min_lr / probe.lr)


def standardizer(x, enabled=True):
  """x ↦ (x − mean) / std with the mean and standard deviation of the train features `x` per
  dimension (constant dimensions divided by 1); the identity when not `enabled`.

  A fixed affine map followed by a linear head is still a linear classifier of the features, so
  the probe measures the same thing; it only conditions the problem. Encoders whose features share
  one dominant positive direction (a random ReLU network's) otherwise leave SGD far from the
  optimum in 100 epochs (docs/evaluation.md).
  """
  if not enabled:
    return lambda features: features
  x = np.asarray(x, np.float64)
  mean, std = x.mean(axis=0), x.std(axis=0)
  scale = 1.0 / np.where(std > 0, std, 1.0)
  mean, scale = mean.astype(np.float32), scale.astype(np.float32)
  return lambda features: (features - mean) * scale


def linear_probe(probe, train_features, test_features, num_classes, seed):
  """Trains a linear classifier; train_features(epoch) → (x, y) is called once per epoch with
  `probe.augment`, else only for epoch 0. With `probe.standardize` every feature is standardised
  with the epoch-0 train features' statistics. Returns test top-1/top-5 in %."""
  x, y = train_features(0)
  transform = standardizer(x, probe.standardize)
  x, y = jnp.asarray(transform(x)), jnp.asarray(y)
  n = len(y)
  steps = -(-n // probe.batch_size)
  head = nn.Dense(num_classes, kernel_init=models.pytorch_default_init)
  tx = optax.sgd(linear_schedule(probe, steps), momentum=probe.momentum)

  def step(carry, batch):
    params, opt_state = carry
    features, labels, mask = batch

    def loss_fn(p):
      ce = optax.softmax_cross_entropy_with_integer_labels(head.apply(p, features), labels)
      return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1)

    updates, opt_state = tx.update(jax.grad(loss_fn)(params), opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  @jax.jit
  def train_epoch(carry, x, y, order, mask):
    return jax.lax.scan(step, carry, (x[order], y[order], mask))[0]

  params = head.init(jax.random.key(seed), jnp.zeros((1, x.shape[1])))
  carry = params, tx.init(params)
  rng = np.random.default_rng(seed)
  # The last batch of an epoch is topped up with repeats that the mask leaves out of the loss.
  pad = steps * probe.batch_size - n
  mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
  mask = mask.reshape(steps, probe.batch_size)
  for epoch in range(probe.epochs):
    if epoch and probe.augment:
      x, y = train_features(epoch)
      x, y = jnp.asarray(transform(x)), jnp.asarray(y)
    order = np.resize(rng.permutation(n), (steps, probe.batch_size))   # repeats fill the end
    carry = train_epoch(carry, x, y, order, mask)
  if not all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(carry[0])):
    raise FloatingPointError(f'the linear probe diverged (train features up to '
                             f'{float(jnp.max(jnp.abs(x))):.3g}); lower probe.lr')
  test_x, test_y = test_features
  return evaluation.topk_accuracy(np.asarray(head.apply(carry[0], transform(test_x))), test_y)


def evaluate_encoder(config, variables, pending, train_examples, test_examples, mesh):
  """Yields (report name, result) for the `pending` protocols of one encoder; frozen features and
  kNN neighbours are computed once and shared."""
  probe = config.probe
  encoder = models.build_encoder(config.model)
  extract = evaluation.batched_apply(lambda v, x: encoder.apply(v, x, train=False), mesh)
  batch = evaluation.batch_size_for(probe.feature_batch_size)
  num_classes = len(train_examples.class_names)
  cache = {}

  def frozen(split):
    if split not in cache:
      examples = train_examples if split == 'train' else test_examples
      cache[split] = extract(variables, input_pipeline.probe_dataset(
          examples, config.data, batch, train=False))
    return cache[split]

  def augmented(epoch):
    return extract(variables, input_pipeline.probe_dataset(
        train_examples, config.data, batch, train=True, seed=config.seed, epoch=epoch))

  for name, (kind, protocol) in pending.items():
    start = time.perf_counter()
    if kind == 'linear':
      result = linear_probe(probe, augmented if probe.augment else lambda _: frozen('train'),
                            frozen('test'), num_classes, config.seed)
    elif kind == 'knn':
      if 'knn' not in cache:
        k = max(p['k'] for e, p in pending.values() if e == 'knn')
        cache['knn'] = knn.neighbours(frozen('train')[0], frozen('test')[0], k,
                                      probe.knn.chunk_size)
      scores = knn.class_scores(*cache['knn'], frozen('train')[1], num_classes, protocol['k'],
                                protocol['temperature'])
      result = evaluation.topk_accuracy(scores, frozen('test')[1])
    else:
      result = finetune.fine_tune(config, variables, train_examples, test_examples,
                                  protocol['fraction'], protocol['head_lr'], mesh,
                                  protocol['subset_file'])
    result.update(protocol=protocol, seconds=round(time.perf_counter() - start, 1))
    yield name, result


def _check_names(requested, known, what):
  unknown = [r for r in requested if r not in known]
  if unknown or not requested:
    raise ValueError(f'unknown {what} {unknown[0]!r}; choose from {", ".join(known)}' if unknown
                     else f'no {what} requested; choose from {", ".join(known)}')


def run_probe(config, workdir, encoders=ENCODERS, evaluations=EVALUATIONS, step='latest',
              force=False, write_plots=True):
  """Runs the requested evaluations and merges them into <workdir>/probe.json; returns the report.

  Every check (names, protocol, checkpoints, architecture, labels) runs before anything is written.
  """
  _check_names(encoders, ENCODERS, 'encoder')
  _check_names(evaluations, EVALUATIONS, 'evaluation')
  validate_probe_config(config.probe)
  manager, steps = evaluation.checkpoint_steps(workdir, step)
  evaluation.validate_checkpoint(config, manager)
  train_examples, test_examples = evaluation.labelled_splits(config.data)
  figures = plots.check_workdirs([workdir], steps[-1]) if write_plots else None
  if 'knn' in evaluations and max(config.probe.knn.k) > len(train_examples):
    raise ValueError(f'kNN with k={max(config.probe.knn.k)} needs at least that many training '
                     f'images; {config.data.train_split!r} has {len(train_examples)}')
  mesh = train.make_mesh()
  todo = protocols(config.probe, evaluations)
  runs = [('trained', s) for s in steps if 'trained' in encoders]
  runs += [('random', 0)] if 'random' in encoders else []
  report = evaluation.load_report(workdir)
  is_main = jax.process_index() == 0
  for encoder, number in runs:
    done = lambda name: report.get(name, {}).get(encoder, {}).get(str(number), {}).get('protocol')
    pending = {name: spec for name, spec in todo.items() if force or done(name) != spec[1]}
    if not pending:
      if is_main:
        print(f'{encoder} encoder, step {number}: {", ".join(todo)} already in {evaluation.REPORT} '
              '(--force to redo)', flush=True)
      continue
    variables = evaluation.submodule(
        evaluation.restore_variables(config, manager, number, ('encoder',)) if encoder == 'trained'
        else evaluation.initial_variables(config, ('encoder',)), 'encoder')
    for name, result in evaluate_encoder(config, variables, pending, train_examples,
                                         test_examples, mesh):
      report.setdefault(name, {}).setdefault(encoder, {})[str(number)] = result
      if is_main:
        evaluation.save_report(workdir, report)
        print(f'{name:>16}  {encoder:>7} encoder, step {number:>6}:  top-1 {result["top1"]:6.2f}%'
              f'  top-5 {result["top5"]:6.2f}%  ({result["seconds"]:.0f} s)', flush=True)
  if write_plots:
    paths = plots.write_plots(figures, workdir, config.probe.tsne)
    if is_main:
      print('wrote ' + ', '.join(paths), flush=True)
  return report


def probe_section(config, flag_probe, overridden):
  """The pretraining config's probe section (e.g. ImageNet-1K's step schedule from lr 25) with
  only the fields given on the command line (`overridden`, dotted paths) taken from the flag."""
  if 'probe' not in config:
    return flag_probe
  probe = evaluation_config.probe_config()
  probe.update(config.probe)
  for path in overridden:
    *parents, last = path.split('.')
    source, target = flag_probe, probe
    for parent in parents:
      source, target = source[parent], target[parent]
    target[last] = source[last]
  return probe


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.ERROR)
  config = FLAGS.config or evaluation.load_config(FLAGS.workdir)
  config.probe = probe_section(config, FLAGS.probe, cli.overridden_fields(sys.argv, 'probe'))
  run_probe(config, FLAGS.workdir, FLAGS.encoders, FLAGS.evaluations, FLAGS.step, FLAGS.force,
            FLAGS.plots)


def run():
  config_flags.DEFINE_config_file('config', None, 'Pretraining config file; default: the '
                                  '<workdir>/config.json written by the pretraining job.')
  config_flags.DEFINE_config_dict('probe', evaluation_config.probe_config(),
                                  "Evaluation protocols; default: the pretraining config's probe "
                                  'section, each --probe.x=y replaces one field of it.')
  flags.DEFINE_string('workdir', None, 'Pretraining workdir (checkpoints/ and config.json).')
  flags.DEFINE_list('encoders', list(ENCODERS), 'Which encoders to evaluate.')
  flags.DEFINE_list('evaluations', list(EVALUATIONS), 'Which evaluations to run.')
  flags.DEFINE_string('step', 'latest', "Checkpoint: 'latest', a step number or 'all'.")
  flags.DEFINE_bool('force', False, 'Recompute results already in probe.json.')
  flags.DEFINE_bool('plots', True, 'Write the figures of infomax_jax.plots into the workdir.')
  flags.mark_flags_as_required(['workdir'])
  cli.run(main)


if __name__ == '__main__':
  run()
