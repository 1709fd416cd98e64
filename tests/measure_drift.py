"""Measures the 1-vs-8-device drift that tests/test_train.py bounds, under this process's
XLA_FLAGS, and prints it as JSON:

    XLA_FLAGS=--xla_cpu_max_isa=AVX2 python -m tests.measure_drift
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()

from infomax_jax import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests import test_train  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests.tiny import tiny_config  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == '__main__':
  examples = input_pipeline.load_split(tiny_config().data, 'train')
  names = ('losses', 'params', 'largest_leaf', 'loss_state')
  print(json.dumps({'xla_flags': os.environ['XLA_FLAGS'], **{
      dtype: dict(zip(names, test_train.device_count_drift(examples, dtype)))
      for dtype in ('float64', 'float32')}}))
