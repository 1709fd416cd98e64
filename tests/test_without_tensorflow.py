"""Without TensorFlow (GPU images ship jax, flax, optax and orbax only): the configs, the model,
every loss, a synthetic-source training run with checkpoints, and the accelerator benchmark run in
processes where importing tensorflow, tensorflow_datasets or tensorboard fails."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = '''
import sys
# As if not installed: `import tensorflow` raises ImportError, importlib.util.find_spec gives None.
for name in ('tensorflow', 'tensorflow_datasets', 'tensorboard'):
  sys.modules[name] = None
'''


def _run(code, *args):
  return subprocess.run([sys.executable, '-c', BLOCK + code, *args], cwd=ROOT, text=True,
                        capture_output=True, timeout=600,
                        env={**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'})


@pytest.mark.slow   # a fresh interpreter and a training run: ~55 s of a clean CI's default suite
def test_model_losses_and_synthetic_training_run_without_tensorflow(tmp_path):
  result = _run(f'''
import jax, numpy as np
sys.path.insert(0, {ROOT!r})
from infomax_jax import losses, train
from tests.tiny import tiny_config
for name in losses.names():
  config = losses.default_config(name)
  if name == 'wmse':
    config.w_size = 16
  module = losses.get(name)
  keys = jax.random.split(jax.random.key(0), 6)
  views = {{k: jax.random.normal(key, (16, 8)) for k, key in zip(('z1', 'z2', 't1', 't2', 'p1', 'p2'), keys)}}
  value, grads = jax.value_and_grad(lambda v: module.loss_fn(v, module.init_state(8, config),
                                                             config)[0])(views)
  assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads)), name
config = tiny_config(**{{'data.source': 'synthetic', 'data.synthetic_examples': 64}})
state = train.train_and_evaluate(config, {str(tmp_path)!r})
assert int(state.step) == 4
assert train.checkpoint_manager({str(tmp_path)!r}, read_only=True).all_steps() == [2, 4]
blocked = [m for m in sys.modules if m.startswith(('tensorflow', 'tensorboard')) and sys.modules[m]]
assert not blocked, blocked
print('done without tensorflow')
''')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'TensorBoard event files are off' in result.stdout
  assert 'step 4/4' in result.stdout and 'done without tensorflow' in result.stdout


@pytest.mark.slow   # ~2 min: ResNet-50 and ResNet-18 steps compiled in two dtypes
def test_accelerator_benchmark_smoke_runs_without_tensorflow(tmp_path):
  out = tmp_path / 'accelerator.json'
  result = _run('''
import runpy
sys.argv = ['benchmarks/accelerator.py', '--smoke', '--out', sys.argv[1]]
runpy.run_path('benchmarks/accelerator.py', run_name='__main__')
''', str(out))
  assert result.returncode == 0, result.stderr[-3000:]
  import json  # pylint: disable=g-import-not-at-top
  results = json.loads(out.read_text())
  assert [(r['case'], r['dtype']) for r in results['steps']] == [
      ('r18-cifar-32', 'float32'), ('r18-cifar-32', 'bfloat16'),
      ('r50-imagenet-224', 'float32'), ('r50-imagenet-224', 'bfloat16')]
  for row in results['steps']:
    assert row['step_seconds'] > 0 and row['flops_per_step_per_chip'] > 0, row
    assert 0 < row['mfu'] and 0 < row['loss_share'], row
  assert sorted(results['logdet']) == ['32', '64']
  assert '| case | dtype |' in result.stdout and '| P | Cholesky ms |' in result.stdout
