"""Cost of the online evaluation (config.online_eval) on the demo model, measured side by side.

    python benchmarks/online_eval_cost.py [--config configs/demo.py] [--rounds 5] [--steps 5]
        [--out benchmarks/results/online_eval_cost.json]

The train step is compiled twice from the same config, without and with the online classifier
(`train.create_train_state(..., num_classes=10)`), and fed the same real batches of the
embedded sample (views and labels, in memory). The two steps alternate for `--rounds` rounds of
`--steps` timed steps each (after one untimed step), so machine noise hits both alike; reported:
the median seconds per step of each and their ratio. Then one in-loop evaluation
(online_eval.Evaluator: the test split and the kNN bank through the encoder, the head and kNN
k = 20/200) is timed twice, the first call including its compilation.
"""
import argparse
import functools
import importlib.util
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import report  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import evaluation  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import online_eval  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position


def load_config(path):
  spec = importlib.util.spec_from_file_location('config_module', os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config('corinfomax')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/demo.py')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--out', default='benchmarks/results/online_eval_cost.json')
  args = parser.parse_args()
  config = load_config(args.config)
  train_examples = input_pipeline.load_split(config.data, config.data.train_split)
  test_examples = evaluation.labelled_split(config.data, config.data.test_split)
  mesh = train.make_mesh()
  model = models.build_model(config)
  tx = train.make_optimizer(config, len(train_examples))
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(train.DATA_AXIS))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  dataset = input_pipeline.pretrain_dataset(train_examples, config, labels=True)
  batches = [train.global_batch(b, sharded)
             for b in dataset.take(args.steps + 1).as_numpy_iterator()]
  variants = {}
  for name, num_classes in (('without', 0), ('with', len(train_examples.class_names))):
    state = jax.jit(functools.partial(train.create_train_state, config, model, tx,
                                      num_classes=num_classes),
                    out_shardings=replicated)(jax.random.key(config.seed))
    feed = [b if num_classes else {k: v for k, v in b.items() if k != 'label'} for b in batches]
    step = train.compile_train_step(config, model, tx, mesh, 10**6).lower(state, feed[0]).compile()
    variants[name] = {'state': state, 'step': step, 'feed': feed, 'times': []}
  for _ in range(args.rounds):
    for variant in variants.values():
      state, metrics = variant['step'](variant['state'], variant['feed'][0])
      jax.block_until_ready(metrics)
      start = time.perf_counter()
      for batch in variant['feed'][1:]:
        state, metrics = variant['step'](state, batch)
      jax.block_until_ready(metrics)
      variant['times'].append((time.perf_counter() - start) / args.steps)
      variant['state'] = state
  evaluator = online_eval.Evaluator(config, model, mesh, train_examples, test_examples)
  evaluations = []
  for _ in range(2):
    start = time.perf_counter()
    accuracies = evaluator(variants['with']['state'])
    evaluations.append(time.perf_counter() - start)
  medians = {k: statistics.median(v['times']) for k, v in variants.items()}
  results = {
      'command': 'python ' + ' '.join(sys.argv), 'config': args.config,
      'batch_size': config.batch_size, 'devices': jax.device_count(),
      'step_seconds': {k: v['times'] for k, v in variants.items()},
      'median_step_seconds': medians, 'ratio_with_to_without': medians['with'] / medians['without'],
      'evaluation_seconds': evaluations, 'test_images': len(test_examples),
      'bank_images': min(config.online_eval.bank_size or len(train_examples), len(train_examples)),
      'accuracies_at_step_0': accuracies}
  print(f'step without the online head {medians["without"]:.3f} s, with {medians["with"]:.3f} s:'
        f' ratio {results["ratio_with_to_without"]:.3f} (median of {args.rounds} alternating '
        f'rounds of {args.steps} steps, batch {config.batch_size})')
  print(f'one in-loop evaluation ({results["test_images"]} test + {results["bank_images"]} bank '
        f'images): {evaluations[0]:.1f} s with compilation, {evaluations[1]:.1f} s after')
  report.write_json(args.out, results)


if __name__ == '__main__':
  main()
