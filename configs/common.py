"""Defaults shared by every experiment config; a config file starts from `base_config(arg)`.

`arg` is the text after the colon in `--config=configs/<file>.py:<arg>`: comma-separated words,
here the loss name (e.g. `configs/cifar10.py:corinfomax`).
"""
import ml_collections

from infomax_jax import losses
from infomax_jax import probe


def base_config(arg=None):
  words = [w for w in (arg or '').split(',') if w]
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 512            # global, over all devices and hosts
  config.num_epochs = 1000           # of the training split; total_steps > 0 overrides it
  config.total_steps = 0

  config.data = ml_collections.ConfigDict(dict(
      source='sample', path='', tfds_name='', tfds_data_dir='', cache_decoded=True,
      train_split='train', test_split='test', image_size=32, normalization='cifar10'))
  config.model = ml_collections.ConfigDict(dict(name='resnet18', width=1.0, cifar_stem=True))
  config.loss = losses.default_config(words[0] if words else 'corinfomax')
  config.projector = ml_collections.ConfigDict(dict(
      dims=(2048, 2048, 64), hidden_batchnorm=False,
      l2_normalize=losses.get(config.loss.name).L2_NORMALIZED_EMBEDDINGS))
  config.optimizer = ml_collections.ConfigDict(dict(
      peak_lr=0.5, min_lr=1e-6, warmup_init_lr=0.003, warmup_epochs=10, warmup_steps=0,
      momentum=0.9, weight_decay=1e-4))

  config.log_every_steps = 50
  config.diagnostics_every_steps = 0   # 0: at every log step
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.max_skipped_batches = 0      # non-finite steps tolerated (skipped) before stopping

  config.probe = probe.default_config()
  return config
