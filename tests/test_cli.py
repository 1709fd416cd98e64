"""The command line: the loss swap by config flag, one-line errors for bad flags and inputs, Ctrl-C."""
import json
import os
import signal
import subprocess
import sys

from absl import flags
import jax
from ml_collections import config_flags
import numpy as np
import pytest

from infomax_jax import cli
from infomax_jax import input_pipeline
from infomax_jax import losses
from infomax_jax import train
from infomax_jax import validation
from tests import fake_gcs
from tests.test_reliability import TINY_FLAGS
from tests.tiny import restore_numpy
from tests.tiny import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parsed_config(argv):
  """The config that main's flag parsing builds from argv (after the loss swap)."""
  argv = cli.loss_in_config_argument(['main', *argv], losses.names())
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  return values.config


@pytest.mark.parametrize('name', losses.names())
def test_loss_swap_by_config_flag_loads_that_losses_defaults(name):
  config = parsed_config(['--config=configs/demo.py', f'--config.loss.name={name}'])
  defaults = dict(losses.default_config(name).to_dict(),
                  **getattr(losses.get(name), 'CIFAR_LOSS', {}))   # the CIFAR recipe's values
  if 'queue_size' in defaults:   # MoCo: the demo's queue is sized to its sample (configs/demo.py)
    defaults['queue_size'] = 6400
  assert config.loss.to_dict() == defaults
  by_argument = parsed_config([f'--config=configs/demo.py:{name}'])
  assert config.to_dict() == by_argument.to_dict()   # projector, optimizer: the loss's recipe
  validation.validate_config(config)
  # The swapped loss's own fields take overrides, placed before or after the swap.
  field = next((k for k, v in sorted(config.loss.items()) if isinstance(v, float)), None)
  if field is None:   # SimSiam has no loss hyper-parameter
    return
  value = config.loss[field] * 0.5 + 0.125
  for order in ((f'--config.loss.{field}={value}', f'--config.loss.name={name}'),
                (f'--config.loss.name={name}', f'--config.loss.{field}={value}')):
    assert parsed_config(['--config=configs/cifar10.py:r18', *order]).loss[field] == value


def test_loss_swap_keeps_the_architecture_and_replaces_the_loss_word():
  argv = cli.loss_in_config_argument(
      ['main', '--config', 'configs/imagenet100.py:r50,emi', '--config.loss.name=vicreg'],
      losses.names())
  assert argv[2] == 'configs/imagenet100.py:r50,vicreg'


def test_config_whose_loss_fields_belong_to_another_loss_is_refused():
  config = parsed_config(['--config=configs/demo.py'])
  with config.unlocked():
    config.loss.name = 'vicreg'
  with pytest.raises(ValueError, match=r"^config.loss has the fields alpha, cov_init, eps, lam, loss 'vicreg'"
                                       r" has cov_coeff, .*--config=FILE:vicreg"):
    validation.validate_config(config)


def _main(*args, cwd=ROOT):
  return subprocess.run([sys.executable, '-m', 'infomax_jax.main', *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300)


def _bad_archive(tmp_path):
  path = tmp_path / 'bad.tar.gz'
  path.write_bytes(np.random.default_rng(0).bytes(4096))
  return path


BAD_COMMANDS = [
    (['--config=configs/demo.py', '--config.modell.width=1'],
     'error: unknown config field in an override: \'modell\'; Did you mean "model"'),
    (['--config=configs/demo.py:r50'],
     "error: flag --config=configs/demo.py:r50: unknown config argument 'r50'"),
    (['--config.total_steps=1', '--config=configs/demo.py'],
     'error: Found --config.total_steps=1 in argv before a value for --config was specified'),
    (['--config=configs/nope.py'], "error: --config: [Errno 2] No such file or directory"),
    (['--config=configs/demo.py', '--config.batch_size=abc'],
     "error: flag --config.batch_size=abc: invalid literal for int()"),
    (['--config=configs/demo.py', '--config.data.source=archive', '--config.data.path=BAD'],
     'error: cannot read data archive '),
]


@pytest.mark.parametrize('args,message', BAD_COMMANDS, ids=lambda a: str(a)[:40])
def test_bad_command_is_one_line_and_writes_nothing(tmp_path, args, message):
  workdir = tmp_path / 'run'
  args = [a.replace('BAD', str(_bad_archive(tmp_path))) for a in args]
  result = _main(*args, f'--workdir={workdir}')
  assert result.returncode == 1
  assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1, (
      result.stderr)
  assert not workdir.exists()


def test_tfds_without_network_is_one_line_error(tmp_path, monkeypatch):
  monkeypatch.setattr(input_pipeline, '_reachable', lambda host: False)
  with pytest.raises(ValueError) as error:
    input_pipeline._read_tfds(tiny_config(**{'data.source': 'tfds', 'data.tfds_name': 'cifar10',
                                             'data.tfds_data_dir': str(tmp_path)}).data, 'train')
  message = str(error.value)
  assert '\n' not in message and 'storage.googleapis.com cannot be reached' in message
  assert 'tfds build cifar10 --file_format=array_record --data_dir=DIR' in message
  assert not any(tmp_path.iterdir())


def _tiny_main(workdir, *overrides):
  return subprocess.Popen(
      [sys.executable, '-m', 'infomax_jax.main', '--config=configs/demo.py',
       f'--workdir={workdir}', *TINY_FLAGS, '--config.checkpoint_every_steps=1000', *overrides],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow   # three training processes: ~75 s
def test_ctrl_c_saves_at_step_boundary_and_resumes_exactly(tmp_path):
  interrupted, uninterrupted = tmp_path / 'interrupted', tmp_path / 'uninterrupted'
  process = _tiny_main(interrupted, '--config.total_steps=12')
  for line in process.stdout:
    if line.startswith('step 3/'):
      process.send_signal(signal.SIGINT)
      break
  output = process.stdout.read()
  stderr = process.stderr.read()
  assert process.wait(timeout=120) == 0, stderr
  assert 'Traceback' not in stderr
  assert 'interrupted: saving at the next step boundary' in output
  saved = int(output.split('preempted: saved step ')[1].split(',')[0])
  assert 3 <= saved < 12
  assert train.checkpoint_manager(str(interrupted), read_only=True).all_steps() == [saved]
  outputs = []
  for workdir in (interrupted, uninterrupted):
    process = _tiny_main(workdir, '--config.total_steps=12')
    outputs.append(process.communicate(timeout=300))
    assert process.returncode == 0, outputs[-1][1]
  assert f'resumed from step {saved} of {interrupted}' in outputs[0][0]
  resumed, reference = restore_numpy(interrupted), restore_numpy(uninterrupted)
  assert resumed.keys() == reference.keys()
  for key in reference:
    np.testing.assert_array_equal(resumed[key], reference[key], err_msg=key)


def test_second_ctrl_c_aborts(monkeypatch):
  monkeypatch.setattr(jax, 'process_count', lambda: 1)
  before = signal.getsignal(signal.SIGINT)   # SIG_IGN in a background job, else Python's handler
  with train._Preemption() as preemption:
    assert signal.getsignal(signal.SIGINT) == preemption._request
    preemption._request(signal.SIGINT, None)
    assert preemption.requested
    with pytest.raises(KeyboardInterrupt):
      preemption._request(signal.SIGINT, None)
  assert signal.getsignal(signal.SIGINT) is before


def test_workdir_path_keeps_bucket_uris_and_makes_local_paths_absolute(tmp_path, monkeypatch):
  assert str(train.workdir_path('gs://bucket/run')) == 'gs://bucket/run'
  assert str(train.workdir_path('gs://bucket/run') / 'config.json') == 'gs://bucket/run/config.json'
  monkeypatch.chdir(tmp_path)
  assert str(train.workdir_path('run')) == str(tmp_path / 'run')
  with pytest.raises(ValueError, match="'b' is not a valid GCS bucket name"):
    train.workdir_path('gs://b/run')   # tensorstore would refuse it at the first save


@pytest.mark.slow   # pretraining, probe and figures as three processes against a local GCS: ~90 s
@pytest.mark.skipif(not fake_gcs.openssl_available(), reason='the fake GCS needs the openssl CLI')
def test_pretrain_probe_plots_round_trip_on_a_bucket(tmp_path):
  """gs:// workdir end to end, offline: every client (orbax/tensorstore, google-cloud-storage,
  TensorFlow's GCS filesystem behind etils epath and clu's writers) talks to tests/fake_gcs.py,
  and nothing is written to the local disk."""
  workdir, out = 'gs://bucket/run', 'gs://bucket/figures'
  commands = [
      ['infomax_jax.main', f'--config={ROOT}/configs/demo.py', f'--workdir={workdir}', *TINY_FLAGS,
       '--config.total_steps=4', '--config.checkpoint_every_steps=2'],
      ['infomax_jax.probe', f'--workdir={workdir}', '--evaluations=linear,knn',
       '--probe.epochs=1', '--probe.feature_batch_size=500'],
      ['infomax_jax.plots', f'--workdir={workdir}', f'--out={out}'],
  ]
  scratch = tmp_path / 'cwd'
  scratch.mkdir()
  with fake_gcs.FakeGcs(tmp_path) as gcs:
    for command in commands:
      result = subprocess.run([sys.executable, '-m', *command], cwd=scratch, env=dict(
          gcs.environment(), PYTHONPATH=ROOT), capture_output=True, text=True, timeout=600)
      assert result.returncode == 0, result.stderr[-3000:]
    objects = gcs.objects('bucket')
    report = json.loads(gcs.read('bucket', 'run/probe.json'))
  assert {'run/config.json', 'run/environment.json'} <= set(objects)
  assert {'run/checkpoints/2/commit_success.txt', 'run/checkpoints/4/commit_success.txt',
          'figures/training.png', 'figures/eigenvalues.png'} <= set(objects)
  assert any(o.startswith('run/events.out.tfevents') for o in objects)
  assert sorted(report) == ['knn_k20', 'knn_k200', 'linear_cached']
  assert report['linear_cached']['trained']['4']['top1'] > 0
  assert not any(scratch.iterdir())   # a bucket path made local would land in the cwd
