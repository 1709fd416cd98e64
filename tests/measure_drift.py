"""Measures the 1-vs-8-device drift that tests/test_train.py and tests/test_losses.py bound,
under this process's XLA_FLAGS, and prints it as JSON (docs/reliability.md):

    XLA_FLAGS=--xla_cpu_max_isa=AVX2 python -m tests.measure_drift
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()

from infomax_jax import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests import test_losses  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests import test_train  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests.tiny import tiny_config  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == '__main__':
  dtypes = ('float64', 'float32')
  results = {'xla_flags': os.environ['XLA_FLAGS']}
  if '--train_only' not in sys.argv:
    results['losses'] = {dtype: max(test_losses.loss_device_drift(name, overrides, dtype)
                                    for name, overrides in test_losses.VARIANTS)
                         for dtype in dtypes}
  if '--losses_only' not in sys.argv:
    examples = input_pipeline.load_split(tiny_config().data, 'train')
    names = ('losses', 'params', 'largest_leaf', 'loss_state')
    results['train'] = {dtype: dict(zip(names, test_train.device_count_drift(examples, dtype)))
                        for dtype in dtypes}
  print(json.dumps(results))
