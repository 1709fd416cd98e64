"""Two processes × 2 CPU devices (gloo collectives) equal one process × 4 devices, including a
checkpoint saved by both processes and restored by both. In float64 (JAX_ENABLE_X64=1), where
the two meshes' reduction orders move the parameters by ~1e-15 instead of float32's ~1e-5, so the
comparison is strict on any CPU."""
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.test_reliability import TINY_FLAGS
from tests.tiny import assert_trees_close
from tests.tiny import restore_numpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 32 images: with the tiny config's 16 the centred batch covariance has rank 15 < P = 16, its
# inverse (the log-det gradient) is ~1/eps and amplifies float32 reduction-order differences.
FLAGS = (*TINY_FLAGS, '--config.total_steps=2', '--config.checkpoint_every_steps=1',
         '--config.batch_size=32', '--config.compute_dtype=float64')
# Measured under the default and --xla_cpu_max_isa=AVX2 code paths (AMD EPYC): whole tree 4.3e-15
# after one step and 1.2e-14 after two (largest leaf 1.0e-14, 5.3e-14). Bound 1e-11 (leaves 1e-10).
TOLERANCE = 1e-11


def _env(devices):
  return {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', 'JAX_ENABLE_X64': '1',
          'XLA_FLAGS': (os.environ.get('XLA_FLAGS', '').replace(
              '--xla_force_host_platform_device_count=8', '') +
                        f' --xla_force_host_platform_device_count={devices}').strip()}


def _command(workdir, *extra):
  return [sys.executable, '-m', 'infomax_jax.main', '--config=configs/demo.py',
          f'--workdir={workdir}', *FLAGS, *extra]


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run_two_processes(workdir, *extra):
  port = _free_port()
  processes = [subprocess.Popen(
      _command(workdir, f'--coordinator=127.0.0.1:{port}', '--num_processes=2',
               f"--process_id={i}", *extra), cwd=ROOT, env=_env(2), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=300) for p in processes]
  for p, (_, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-2000:]
  assert 'step' not in outputs[1][0] and 'step' in outputs[0][0]   # process 0 logs
  return outputs[0][0]


@pytest.mark.slow
@pytest.mark.numerics
def test_two_processes_match_one_process_with_four_devices(tmp_path):
  single = tmp_path / 'single'
  result = subprocess.run(_command(single), cwd=ROOT, env=_env(4), capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  multi = tmp_path / 'multi'
  _run_two_processes(multi)
  # One step: the same computation up to float64 reduction order.
  assert restore_numpy(single, 1)["['params']['encoder']['BasicBlock_0']['Conv_0']['kernel']"
                                  ].dtype == np.float64
  assert_trees_close(restore_numpy(multi, 1), restore_numpy(single, 1), TOLERANCE)

  # Both processes save step 1 and restore it: the resumed step 2 is bit-identical.
  uninterrupted = restore_numpy(multi, 2)
  shutil.rmtree(multi / 'checkpoints' / '2')
  log = _run_two_processes(multi)
  assert 'step 2/2' in log and 'step 1/2' not in log
  resumed = restore_numpy(multi, 2)
  for key, value in uninterrupted.items():
    np.testing.assert_array_equal(resumed[key], value, err_msg=key)

  # The second step amplifies the first one's rounding through the log-det's inverse covariance
  # (float32: ~1e-4); float64 keeps it far below the bound.
  assert_trees_close(uninterrupted, restore_numpy(single, 2), TOLERANCE)
