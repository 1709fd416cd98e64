"""Reliability: bad inputs refused before any work, divergence guard, preemption, exact resume
after SIGKILL at random points."""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf

from infomax_jax import input_pipeline
from infomax_jax import train
from tests.tiny import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BAD_INPUTS = [
    ({'loss.name': 'infonce'}, "unknown loss 'infonce'; known losses: barlow, byol, corinfomax"),
    ({'model.name': 'vit'}, "unknown model 'vit'; known models: resnet18, resnet50"),
    ({'data.source': 'hub'}, "unknown data source 'hub'"),
    ({'data.source': 'archive'}, "data source 'archive' needs --config.data.path"),
    ({'data.source': 'folder'}, "data source 'folder' needs --config.data.path"),
    ({'data.source': 'tfds', 'data.tfds_name': ''}, "data source 'tfds' needs --config.data.tfds_name"),
    ({'data.source': 'archive', 'data.path': '/nonexistent/c10.tar.gz'},
     'data archive not found: /nonexistent/c10.tar.gz'),
    ({'data.source': 'folder', 'data.path': '/nonexistent'}, 'image folder not found: /nonexistent/train'),
    ({'data.normalization': 'mnist'}, "unknown normalization 'mnist'"),
    ({'data.image_size': 0}, 'data.image_size=0 must be positive'),
    ({'loss.lam': 1.0}, 'forgetting factor loss.lam=1.0 must be in [0, 1)'),
    ({'loss.lam': -0.1}, 'forgetting factor loss.lam=-0.1 must be in [0, 1)'),
    ({'loss.alpha': -1.0}, 'loss.alpha=-1.0 must be non-negative'),
    ({'loss.eps': -1e-8}, 'loss.eps=-1e-08 must be non-negative'),
    ({'batch_size': 12}, 'batch_size=12 must be a positive multiple of the 8 devices'),
    ({'batch_size': 0}, 'batch_size=0 must be a positive multiple of the 8 devices'),
    ({'batch_size': 16000}, 'batch_size=16000 exceeds the 10000 training images'),
    ({'total_steps': 0, 'num_epochs': 0}, 'set a positive num_epochs or total_steps'),
    ({'log_every_steps': 0}, 'log_every_steps=0 must be positive'),
    ({'checkpoint_every_steps': 0}, 'checkpoint_every_steps=0 must be positive'),
    ({'model.width': 0.0}, 'model.width=0.0 must be positive'),
    ({'projector.dims': (32, 0)}, 'projector.dims=(32, 0) must be positive sizes'),
    ({'optimizer.momentum': 1.5}, 'optimizer.momentum=1.5 must be in [0, 1)'),
    ({'optimizer.weight_decay': -1.0}, 'optimizer.weight_decay=-1.0 must be >= 0'),
]


def _snapshot(path):
  return sorted((os.path.relpath(os.path.join(d, f), path), os.path.getmtime(os.path.join(d, f)))
                for d, _, files in os.walk(path) for f in files)


@pytest.mark.parametrize('overrides,message', BAD_INPUTS,
                         ids=[','.join(o) for o, _ in BAD_INPUTS])
def test_bad_input_is_one_line_error_and_writes_nothing(tmp_path, overrides, message):
  config = tiny_config()
  loss_overrides = {k: v for k, v in overrides.items() if k == 'loss.name'}
  if loss_overrides:
    config.loss.name = loss_overrides['loss.name']
  else:
    config = tiny_config(**overrides)
  workdir = tmp_path / 'run'
  with pytest.raises((ValueError, FileNotFoundError)) as error:
    train.train_and_evaluate(config, str(workdir))
  assert str(error.value).startswith(message), str(error.value)
  assert '\n' not in str(error.value)
  assert not workdir.exists()


@pytest.mark.parametrize('loss,overrides,message', [
    ('emi', {'loss.logdet': 'svd'}, "unknown loss.logdet 'svd'; known: exact, taylor"),
    ('minc', {'loss.form': 'qr'}, "unknown loss.form 'qr'; known: oja, gha"),
    ('minc', {'loss.target': 'frozen'}, "unknown loss.target 'frozen'; known: ema, online"),
    ('simclr', {'loss.temperature': 0.0}, 'loss.temperature=0.0 must be positive'),
])
def test_bad_loss_options(tmp_path, loss, overrides, message):
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(tiny_config(loss, **overrides), str(workdir))
  assert not workdir.exists()


@pytest.mark.slow   # two training runs: ~75 s of the default suite's budget
def test_checkpoint_that_does_not_match_the_config(tmp_path):
  workdir = str(tmp_path)
  train.train_and_evaluate(tiny_config(total_steps=2), workdir)
  before = _snapshot(workdir)
  with pytest.raises(ValueError, match=r"does not match the config: params/projector/Dense_1/kernel is "
                                       r"\(32, 16\), the config builds \(32, 8\)"):
    train.train_and_evaluate(tiny_config(total_steps=4, **{'projector.dims': (32, 8)}), workdir)
  assert _snapshot(workdir) == before


def _poisoned(bad_step):
  """pretrain_dataset whose batch of step `bad_step` (1-based) holds a NaN pixel."""
  original = input_pipeline.pretrain_dataset

  def dataset(examples, config, start_step=0, *args, **kwargs):
    def poison(index, batch):
      bad = tf.equal(start_step + index + 1, bad_step)
      return dict(batch, view1=tf.where(bad, np.nan, batch['view1']))
    return original(examples, config, start_step, *args, **kwargs).enumerate().map(poison)

  return dataset


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  monkeypatch.setattr(input_pipeline, 'pretrain_dataset', _poisoned(3))
  workdir = str(tmp_path)
  with pytest.raises(FloatingPointError, match=r'^step 3: non-finite .*loss=nan'):
    train.train_and_evaluate(tiny_config(total_steps=6), workdir)
  manager = train.checkpoint_manager(workdir, read_only=True)
  assert manager.all_steps() == [2]


@pytest.mark.parametrize('bad_step', [3, 2])   # 2 is a log and checkpoint step
def test_nonfinite_batch_is_skipped_when_allowed(tmp_path, monkeypatch, bad_step):
  monkeypatch.setattr(input_pipeline, 'pretrain_dataset', _poisoned(bad_step))
  state = train.train_and_evaluate(tiny_config(total_steps=6, max_skipped_batches=1),
                                   str(tmp_path))
  assert int(state.step) == 6
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(state.params)))


TINY_FLAGS = ('--config.model.width=0.125', '--config.projector.dims=(32,16)',
              '--config.data.image_size=16', '--config.batch_size=16',
              '--config.optimizer.warmup_steps=1', '--config.log_every_steps=1',
              '--config.online_eval.enabled=False')   # tests/test_online_eval.py covers it


def _start(workdir, *overrides):
  """The main job as a process, with the settings of tests.tiny.tiny_config."""
  return subprocess.Popen(
      [sys.executable, '-m', 'infomax_jax.main', '--config=configs/demo.py', f'--workdir={workdir}',
       *TINY_FLAGS, *overrides],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
      env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})


def _final_state(workdir):
  manager = train.checkpoint_manager(workdir, read_only=True)
  state = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore())).state
  return manager.all_steps(), jax.device_get(state)


@pytest.mark.slow   # ~65 s on a cold 2-core CI run: with the slow tests, in CI's second pass
def test_sigterm_saves_at_step_boundary_and_exits_zero(tmp_path):
  process = _start(tmp_path, '--config.total_steps=100000', '--config.checkpoint_every_steps=1000')
  for line in process.stdout:
    if line.startswith('step 3/'):
      process.send_signal(signal.SIGTERM)
      break
  output = process.stdout.read()
  assert process.wait(timeout=120) == 0
  saved = int(output.split('preempted: saved step ')[1].split(',')[0])
  assert saved >= 3
  assert train.checkpoint_manager(str(tmp_path), read_only=True).all_steps() == [saved]


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path):
  reference = str(tmp_path / 'reference')
  train.train_and_evaluate(tiny_config(total_steps=24, checkpoint_every_steps=3, log_every_steps=1),
                           reference)
  overrides = ('--config.total_steps=24', '--config.checkpoint_every_steps=3')
  rng = np.random.default_rng(0)
  killed = tmp_path / 'killed'
  for target in (5, 16):               # kill at a random moment after step `target` was logged
    process = _start(killed, *overrides)
    for line in process.stdout:
      if line.startswith(f'step {target}/'):
        time.sleep(rng.uniform(0.0, 0.2))
        process.kill()
        break
    assert process.wait(timeout=60) == -signal.SIGKILL
  assert _start(killed, *overrides).wait(timeout=300) == 0
  steps, state = _final_state(str(killed))
  reference_steps, reference_state = _final_state(reference)
  assert steps[-1] == reference_steps[-1] == 24
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(reference_state)):
    np.testing.assert_array_equal(a, b)
