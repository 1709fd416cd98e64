"""A CPU-sized configuration of the demo for tests: narrow encoder, tiny batch, 16-px crops."""
from configs import demo


def tiny_config(loss='corinfomax', **overrides):
  config = demo.get_config(loss)
  config.model.width = 0.125
  config.projector.dims = (32, 16)
  config.data.image_size = 16
  config.batch_size = 16
  config.total_steps = 4
  config.optimizer.warmup_steps = 1
  config.log_every_steps = 2
  config.checkpoint_every_steps = 2
  config.probe.epochs = 2
  config.probe.feature_batch_size = 400
  for key, value in overrides.items():
    node = config
    *path, last = key.split('.')
    for part in path:
      node = node[part]
    node[last] = value
  return config
