"""Checks that run before any work, each failing with one line that names the problem."""
import jax
import numpy as np

from infomax_jax import input_pipeline
from infomax_jax import losses
from infomax_jax import models
from infomax_jax import augment


def validate_config(config):
  losses.get(config.loss.name)
  if config.model.name not in models.encoder_names():
    raise ValueError(f'unknown model {config.model.name!r}; known models: '
                     f'{", ".join(models.encoder_names())}')
  if config.data.source not in input_pipeline.SOURCES:
    raise ValueError(f'unknown data source {config.data.source!r}; known sources: '
                     f'{", ".join(input_pipeline.SOURCES)}')
  if config.data.source in ('archive', 'folder') and not config.data.path:
    raise ValueError(f'data source {config.data.source!r} needs --config.data.path')
  if config.data.source == 'tfds' and not config.data.tfds_name:
    raise ValueError("data source 'tfds' needs --config.data.tfds_name")
  if config.data.normalization not in augment.NORMALIZATION:
    raise ValueError(f'unknown normalization {config.data.normalization!r}; known: '
                     f'{", ".join(augment.NORMALIZATION)}')
  loss = config.loss
  if 'lam' in loss and not 0.0 <= loss.lam < 1.0:
    raise ValueError(f'forgetting factor loss.lam={loss.lam} must be in [0, 1)')
  for name in ('alpha', 'eps'):
    if name in loss and loss[name] < 0:
      raise ValueError(f'loss.{name}={loss[name]} must be non-negative')
  if config.batch_size <= 0 or config.batch_size % jax.device_count():
    raise ValueError(f'batch_size={config.batch_size} must be a positive multiple of the '
                     f'{jax.device_count()} devices')
  if config.model.width <= 0:
    raise ValueError(f'model.width={config.model.width} must be positive')
  if not config.projector.dims or min(config.projector.dims) <= 0:
    raise ValueError(f'projector.dims={tuple(config.projector.dims)} must be positive sizes')


def validate_batch(config, num_train):
  if config.batch_size > num_train:
    raise ValueError(f'batch_size={config.batch_size} exceeds the {num_train} training images')


def _names(path):
  return tuple(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def validate_checkpoint(abstract_state, manager):
  """The latest checkpoint must hold arrays of the shapes this config builds."""
  step = manager.latest_step()
  where = f'checkpoint {manager.directory}/{step} does not match the config'
  stored = {_names(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(
      manager.item_metadata(step).state, is_leaf=lambda x: hasattr(x, 'shape'))[0]}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]:
    name = '/'.join(_names(path))
    if _names(path) not in stored:
      raise ValueError(f'{where}: it has no {name}')
    if tuple(stored[_names(path)].shape) != tuple(np.shape(leaf)):
      raise ValueError(f'{where}: {name} is {tuple(stored[_names(path)].shape)}, the config '
                       f'builds {tuple(np.shape(leaf))}')
