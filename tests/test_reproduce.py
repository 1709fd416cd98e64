"""benchmarks/reproduce.py's table: rows per loss, a stopped run kept as a row, the random
baseline and the thesis column."""
import argparse
import importlib.util
import json
import os
import sys

import pytest

from infomax_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location('reproduce',
                                              os.path.join(ROOT, 'benchmarks', 'reproduce.py'))
reproduce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce)


def report(encoder, step, top1):
  entry = {str(step): {'top1': top1, 'top5': top1 + 40}}
  return {'linear': {encoder: entry}, 'knn_k20': {encoder: entry}, 'knn_k200': {encoder: entry}}


def test_table_rows_failures_random_and_thesis_column():
  args = argparse.Namespace(config='configs/cifar10_miniature.py', override=['--config.seed=1'],
                            grid=[])
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
  args = argparse.Namespace(config='configs/demo.py', override=[], grid=[])
  trained, random = report('trained', 300, 40.0), report('random', 0, 30.0)
  for r in (trained, random):
    r['linear_cached'] = r.pop('linear')
  results, markdown = reproduce.table(args, {'corinfomax': (trained, 60.0, None)}, random)
  assert results['rows']['corinfomax']['linear (cached) top-1'] == 40.0
  assert markdown.splitlines()[0].startswith('| method | linear (cached) top-1 |')


def test_grid_points_values_and_names():
  points = reproduce.grid_points(['config.optimizer.peak_lr=0.25,0.5',
                                  '--config.projector.dims=(512,64),[1024, 64]'])
  assert points == [[('optimizer.peak_lr', a), ('projector.dims', b)]
                    for a in ('0.25', '0.5') for b in ('(512,64)', '[1024, 64]')]
  assert reproduce.grid_points([]) == [[]]   # no grid: each loss once, named by the loss alone
  assert reproduce.row_name('minc', points[1]) == 'minc optimizer.peak_lr=0.25 projector.dims=[1024, 64]'
  assert reproduce.workdir_name('minc', points[1]) == (
      'minc__optimizer.peak_lr=0.25__projector.dims=_1024__64_')
  assert reproduce.workdir_name('minc', []) == 'minc'
  for bad in ('config.loss.beta', 'config.loss.beta=', 'config.loss.beta=0.5,,0.9',
              'config.projector.dims=(512,64'):
    with pytest.raises(SystemExit, match='error: --grid'):
      reproduce.grid_points([bad])


def test_sweep_runs_every_point_with_its_overrides_and_writes_one_table(tmp_path, monkeypatch):
  """Pretraining and probe commands replaced by a recorder that writes each run's probe.json:
  one workdir and one row per (loss, point), the point's values passed as config flags, the
  random encoder probed once, a stopped run kept as a row."""
  commands = []

  def fake_run(command, log_path):
    commands.append(command)
    workdir = next((a.split('=', 1)[1] for a in command if a.startswith('--workdir=')), None)
    if 'infomax_jax.main' in command and '--config.loss.beta=0.0' in command:
      raise reproduce.RunFailed('error: step 3: non-finite loss=nan')
    if 'infomax_jax.main' in command:   # the training job records its host
      train.record_environment(workdir, 0)
    if 'infomax_jax.probe' in command:   # top-1 40 + beta, from the workdir's name
      top1 = 40.0 + float(workdir.rsplit('=', 1)[1])
      encoders = next(a for a in command if a.startswith('--encoders=')).split('=')[1]
      entry = report('trained', 300, top1)
      if 'random' in encoders:
        for evaluation, value in report('random', 0, 30.0).items():
          entry[evaluation].update(value)
      with open(os.path.join(workdir, 'probe.json'), 'w') as f:
        json.dump(entry, f)

  monkeypatch.setattr(reproduce, 'run', fake_run)
  monkeypatch.setattr(sys, 'argv', [
      'reproduce.py', '--config=configs/demo.py', f'--root={tmp_path}', '--losses=minc',
      '--override=--config.seed=1', '--grid=config.loss.beta=0.5,0.0,0.9'])
  reproduce.main()
  pretraining = [c for c in commands if 'infomax_jax.main' in c]
  assert [c[-1] for c in pretraining] == ['--config.loss.beta=0.5', '--config.loss.beta=0.0',
                                          '--config.loss.beta=0.9']
  assert all('--config.seed=1' in c and '--config=configs/demo.py:minc' in c for c in pretraining)
  probes = [c for c in commands if 'infomax_jax.probe' in c]
  assert [a for c in probes for a in c if a.startswith('--encoders=')] == [
      '--encoders=trained,random', '--encoders=trained']
  with open(tmp_path / 'results.json') as f:
    results = json.load(f)
  assert results['grid'] == ['config.loss.beta=0.5,0.0,0.9']
  rows = results['rows']
  assert list(rows) == ['minc loss.beta=0.5', 'minc loss.beta=0.0', 'minc loss.beta=0.9',
                        'random init']
  assert rows['minc loss.beta=0.5']['linear top-1'] == 40.5
  assert rows['minc loss.beta=0.9']['linear top-1'] == 40.9
  assert rows['minc loss.beta=0.0']['error'] == 'error: step 3: non-finite loss=nan'
  assert rows['random init']['linear top-1'] == 30.0
  host = train.host_environment()
  assert rows['minc loss.beta=0.5']['environment']['cpu'] == host['cpu']
  assert rows['minc loss.beta=0.0']['environment'] is None   # stopped before it started
  assert f'pretrained on {host["cpu"]}' in (tmp_path / 'results.md').read_text()
  assert sorted(os.listdir(tmp_path)) == sorted([
      'minc__loss.beta=0.0', 'minc__loss.beta=0.5', 'minc__loss.beta=0.9', 'results.json',
      'results.md'])
