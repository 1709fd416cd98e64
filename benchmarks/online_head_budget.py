"""How far the online head is from the probe because of its budget, not the moving encoder.

    python benchmarks/online_head_budget.py --workdir=/tmp/demo/minc [--multiples 1,3]
        [--out benchmarks/results/online_head_budget.json]

On a finished pretraining workdir: the final checkpoint's encoder is frozen, and fresh online
heads (online_eval.init / train_head, the training job's own head and optimizer) -- plain at a
constant lr, with `online_eval.standardize` at a constant lr, and standardised at the cosine lr
(`online_eval.lr_schedule`, decaying over the head's own steps) -- are trained side by side on
the same features of the run's own pretraining stream (the same augmented two-view batches,
step after step) for `multiples` × the run's steps, then evaluated on the test split (test
transform) as the in-loop evaluation does. Next to them: the run's own online head (trained while
the encoder moved) and the probe job's results in the workdir (probe.json), when present.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import report  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import evaluation  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import online_eval  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import plots  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--multiples', default='1,3')
  parser.add_argument('--out', default='benchmarks/results/online_head_budget.json')
  args = parser.parse_args()
  config = evaluation.load_config(args.workdir)
  manager, (step,) = evaluation.checkpoint_steps(args.workdir)
  variables = evaluation.restore_variables(config, manager, step)
  model = models.build_model(config, jnp.float32)
  features = jax.jit(lambda x: model.apply(variables, x, train=False)[0])
  train_examples, test_examples = evaluation.labelled_splits(config.data)
  num_classes = len(train_examples.class_names)
  evaluator = online_eval.Evaluator(config, model, train.make_mesh(), train_examples,
                                    test_examples)
  test_x, test_y = evaluator.features(variables, 'test')

  multiples = sorted(int(m) for m in args.multiples.split(','))
  run_steps = train.total_steps(config, len(train_examples))
  variants = {'plain, constant lr': (False, 'constant'),
              'standardized, constant lr': (True, 'constant'),
              'standardized, cosine lr': (True, 'cosine')}
  head_configs = {}   # (variant, multiple): config; each head's schedule spans its own steps
  for name, (standardize, lr_schedule) in variants.items():
    for multiple in multiples:
      head_config = config.online_eval.copy_and_resolve_references()
      head_config.standardize, head_config.lr_schedule = standardize, lr_schedule
      head_configs[name, multiple] = head_config
  heads = {key: online_eval.init(c, num_classes, test_x.shape[1], jax.random.key(0))
           for key, c in head_configs.items()}
  train_heads = jax.jit(lambda heads, x, y, step: {
      key: online_eval.train_head(heads[key], x, y, c, step=step, num_steps=key[1] * run_steps)[0]
      for key, c in head_configs.items()})
  stream = input_pipeline.batches(input_pipeline.pretrain_dataset(
      train_examples, config, local_devices=1, labels=True))
  results = {'command': 'python ' + ' '.join(sys.argv), 'workdir': args.workdir,
             'loss': config.loss.name, 'run_steps': run_steps, 'checkpoint_step': step,
             'run_head': {k: config.online_eval.get(k) for k in ('standardize', 'lr_schedule')},
             'frozen_final_encoder': {name: {} for name in variants}}
  for done, batch in enumerate(stream, start=1):
    x = jnp.concatenate([features(batch['view1']), features(batch['view2'])])
    heads = train_heads(heads, x, jnp.concatenate([batch['label'], batch['label']]), done - 1)
    if done % run_steps == 0 and done // run_steps in multiples:
      for name in variants:
        logits = np.asarray(online_eval.logits(heads[name, done // run_steps], test_x))
        top1 = evaluation.topk_accuracy(logits, test_y)['top1']
        results['frozen_final_encoder'][name][done] = top1
        print(f'{name} online head on the frozen final encoder, {done} steps: test top-1 '
              f'{top1:.2f} %', flush=True)
      if done // run_steps == multiples[-1]:
        break
  scalars = plots.read_scalars(args.workdir, tags=('online/linear_top1',))
  if 'online/linear_top1' in scalars:
    steps, values = scalars['online/linear_top1']
    results['run_online_head'] = float(values[list(steps).index(step)]) if step in steps else None
    print(f'the run\'s own online head at step {step}: {results["run_online_head"]}')
  probe = evaluation.load_report(args.workdir)
  results['probe'] = {name: by_encoder['trained'][str(step)]['top1']
                      for name, by_encoder in probe.items()
                      if str(step) in by_encoder.get('trained', {})}
  print('probe job on the same checkpoint:', results['probe'])
  report.write_json(args.out, results)


if __name__ == '__main__':
  main()
