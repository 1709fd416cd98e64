"""The README quick start: the demo (configs/demo.py) at batch 128 instead of 256, the same 300
steps, so that pretraining and the probe (linear + kNN) finish in under 10 minutes on the slowest
2-core CPU measured (~100 img/s; docs/results.md says what it was measured on). Argument: the loss
name.
"""
from configs import demo


def get_config(arg=None):
  config = demo.get_config(arg)
  config.batch_size = 128
  config.online_eval.every_steps = 150   # two online evaluations, to stay in the time budget
  return config
