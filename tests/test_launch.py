"""The launch scripts: --help, argument errors, and the commands they would run (--dry-run)."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ('single_host.sh', 'tpu_pod.sh', 'slurm.sh')


def launch(script, *args, env=None):
  return subprocess.run(['bash', os.path.join(ROOT, 'launch', script), *args], cwd=ROOT,
                        capture_output=True, text=True, env={**os.environ, **(env or {})})


@pytest.mark.parametrize('script', SCRIPTS)
def test_help(script):
  result = launch(script, '--help')
  assert result.returncode == 0 and 'CONFIG' in result.stdout and 'WORKDIR' in result.stdout
  assert 'probe job' in result.stdout and '--dry-run' in result.stdout
  assert 'set -euo' not in result.stdout and 'usage()' not in result.stdout   # no script code


def _recording_path(tmp_path):
  """A PATH whose gcloud, srun and python only record that they were run."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for tool in ('gcloud', 'srun', 'python'):
    (bin_dir / tool).write_text(f'#!/bin/sh\necho {tool} >> {tmp_path}/ran\n')
    (bin_dir / tool).chmod(0o755)
  return f'{bin_dir}:/usr/bin:/bin'


def test_slurm_runs_from_the_sbatch_spool_copy(tmp_path):
  """sbatch runs a copy of the script from its spool directory: options.sh comes from the
  submission directory."""
  copy = tmp_path / 'slurm_script'
  copy.write_text(open(os.path.join(ROOT, 'launch', 'slurm.sh')).read())
  result = subprocess.run(['bash', str(copy), '--dry-run', 'configs/demo.py', '/shared/run'],
                          cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, 'SLURM_SUBMIT_DIR': ROOT,
                               'SLURM_JOB_NODELIST': 'gpu[07-08]', 'SLURM_NTASKS': '2'})
  assert result.returncode == 0, result.stderr
  assert '--coordinator=gpu07:12355' in result.stdout


@pytest.mark.parametrize('script,args', [
    ('tpu_pod.sh', ['--name', 'x', '--zone', 'z', 'configs/demo.py', 'gs://b/r',
                    '--config.total_steps=3', '--dry-run']),
    ('tpu_pod.sh', ['--dry-run', '--name', 'x', '--zone', 'z', '--create', 'configs/demo.py',
                    'gs://b/r']),
    ('slurm.sh', ['configs/demo.py', '/shared/r', '--dry-run']),
    ('single_host.sh', ['configs/demo.py', '/tmp/r', '--config.total_steps=3', '--dry-run']),
])
def test_dry_run_anywhere_executes_nothing(tmp_path, script, args):
  result = launch(script, *args, env={'PATH': _recording_path(tmp_path), 'SLURM_JOB_NODELIST': '',
                                      'SLURM_NTASKS': ''})
  assert result.returncode == 0, result.stderr
  assert not (tmp_path / 'ran').exists()
  lines = result.stdout.splitlines()
  assert any('infomax_jax.main' in l for l in lines) and 'infomax_jax.probe' in lines[-1]
  assert not any('--dry-run' in l for l in lines)


def test_tpu_pod_dry_run_passes_the_config_through():
  result = launch('tpu_pod.sh', '--name', 'ssl', '--zone', 'us-central2-b', '--create',
                  '--dry-run', 'configs/imagenet100.py:r50,emi', 'gs://bucket/run',
                  '--config.loss.order=8')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0].startswith('gcloud compute tpus tpu-vm create ssl')
  assert '--accelerator-type=v4-32' in lines[0]
  train = next(l for l in lines if 'infomax_jax.main' in l)
  assert '--worker=all' in train and '--distributed' in train
  assert 'configs/imagenet100.py:r50' in train and 'gs://bucket/run' in train
  assert '--config.loss.order=8' in train
  assert 'infomax_jax.probe' in lines[-1] and '--worker=0' in lines[-1]


@pytest.mark.parametrize('per_gpu', [False, True])
def test_slurm_dry_run_takes_the_coordinator_from_the_allocation(per_gpu):
  env = {'SLURM_JOB_NODELIST': 'gpu[07-08]', 'SLURM_NTASKS': '2', 'PATH': '/usr/bin:/bin'}
  args = ['--per-gpu'] if per_gpu else []
  result = launch('slurm.sh', *args, '--dry-run', 'configs/demo.py:vicreg', '/shared/run', env=env)
  assert result.returncode == 0, result.stderr
  train, probe = result.stdout.splitlines()
  assert train.startswith('srun') and '--coordinator=gpu07:12355' in train
  assert r'--num_processes=\$SLURM_NTASKS' in train and r'--process_id=\$SLURM_PROCID' in train
  assert ('CUDA_VISIBLE_DEVICES' in train) == per_gpu
  assert probe.startswith('srun --nodes=1 --ntasks=1') and '/shared/run' in probe


@pytest.mark.parametrize('script,args,message', [
    ('tpu_pod.sh', ['configs/demo.py', 'gs://b'], '--name and --zone are required'),
    ('tpu_pod.sh', ['--name', 'x', '--zone', 'z', 'configs/nope.py', 'gs://b'],
     'config file not found: configs/nope.py'),
    ('tpu_pod.sh', ['--frobnicate'], 'unknown option --frobnicate'),
    ('slurm.sh', ['configs/demo.py', '/x'], 'not inside a SLURM allocation'),
])
def test_bad_arguments_are_one_line_errors(script, args, message):
  result = launch(script, *args, env={'SLURM_JOB_NODELIST': '', 'SLURM_NTASKS': ''})
  assert result.returncode == 2
  assert result.stderr.strip().startswith('error: ') and message in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1
