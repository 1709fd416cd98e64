"""benchmarks/reproduce.py's table: rows per loss, a stopped run kept as a row, the random
baseline and the thesis column."""
import argparse
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location('reproduce',
                                              os.path.join(ROOT, 'benchmarks', 'reproduce.py'))
reproduce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce)


def report(encoder, step, top1):
  entry = {str(step): {'top1': top1, 'top5': top1 + 40}}
  return {'linear': {encoder: entry}, 'knn_k20': {encoder: entry}, 'knn_k200': {encoder: entry}}


def test_table_rows_failures_random_and_thesis_column():
  args = argparse.Namespace(config='configs/cifar10_miniature.py', override=['--config.seed=1'])
  trained = report('trained', 500, 40.0)
  trained['linear']['trained']['250'] = {'top1': 30.0, 'top5': 70.0}   # not the latest: ignored
  random = report('random', 0, 30.0)
  rows = {'corinfomax': (trained, 600.0, None),
          'vicreg': (None, 12.0, 'error: step 7: non-finite loss=nan')}
  results, markdown = reproduce.table(args, rows, random)
  assert results['dataset'] == 'cifar10'
  assert results['rows']['corinfomax']['linear top-1'] == 40.0
  assert results['rows']['corinfomax']['linear top-5'] == 80.0
  assert results['rows']['corinfomax']['thesis_top1'] == 93.18
  assert results['rows']['vicreg']['error'].startswith('error: step 7')
  assert results['rows']['random init']['kNN k=200'] == 30.0
  lines = markdown.splitlines()
  assert lines[0].startswith('| method | linear top-1')
  assert lines[2] == '| corinfomax | 40.00 | 80.00 | 40.00 | 40.00 | 10.0 | 93.18 |'
  assert 'stopped: step 7: non-finite loss=nan' in lines[3] and '92.07' in lines[3]
  assert lines[4].startswith('| random init | 30.00 |')


def test_cached_feature_probe_is_named_in_the_table():
  args = argparse.Namespace(config='configs/demo.py', override=[])
  trained, random = report('trained', 300, 40.0), report('random', 0, 30.0)
  for r in (trained, random):
    r['linear_cached'] = r.pop('linear')
  results, markdown = reproduce.table(args, {'corinfomax': (trained, 60.0, None)}, random)
  assert results['rows']['corinfomax']['linear (cached) top-1'] == 40.0
  assert markdown.splitlines()[0].startswith('| method | linear (cached) top-1 |')
