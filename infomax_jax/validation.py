"""Checks that run before any work, each failing with one line that names the problem."""
import jax
import numpy as np

from infomax_jax import sources
from infomax_jax import losses
from infomax_jax import models
from infomax_jax import online_eval

OPTIMIZERS = ('sgd', 'lars', 'adam')   # train.make_optimizer


def _require(condition, message):
  if not condition:
    raise ValueError(message)


def validate_config(config):
  """Names, ranges and divisibility, before any data is read or any file is written."""
  module = losses.get(config.loss.name)
  expected = set(losses.default_config(config.loss.name))
  _require(set(config.loss) == expected,
           f'config.loss has the fields {", ".join(sorted(set(config.loss) - {"name"}))}, loss '
           f'{config.loss.name!r} has {", ".join(sorted(expected - {"name"}))}: name the loss in '
           f'the config argument (--config=FILE:{config.loss.name}) so that its defaults load')
  _require(config.model.name in models.encoder_names(),
           f'unknown model {config.model.name!r}; known models: '
           f'{", ".join(models.encoder_names())}')
  data_config = config.data
  _require(data_config.source in sources.SOURCES,
           f'unknown data source {data_config.source!r}; known sources: '
           f'{", ".join(sources.SOURCES)}')
  _require(data_config.source not in ('archive', 'folder') or data_config.path,
           f'data source {data_config.source!r} needs --config.data.path')
  _require(data_config.source != 'tfds' or data_config.tfds_name,
           "data source 'tfds' needs --config.data.tfds_name")
  _require(data_config.source != 'synthetic' or (data_config.synthetic_examples > 0
                                                 and data_config.synthetic_pool > 0),
           'data source \'synthetic\' needs positive data.synthetic_examples and synthetic_pool')
  _require(data_config.normalization in sources.NORMALIZATION,
           f'unknown normalization {data_config.normalization!r}; known: '
           f'{", ".join(sources.NORMALIZATION)}')
  _require(data_config.image_size > 0,
           f'data.image_size={data_config.image_size} must be positive')
  _require(data_config.get('cache_decoded', 'auto') in sources.CACHE_DECODED + (True, False),
           f'config.data.cache_decoded must be one of {", ".join(sources.CACHE_DECODED)}, not '
           f'{data_config.get("cache_decoded")!r}')
  online = config.get('online_eval')
  if online and online.enabled:
    _require(online.lr > 0 and online.every_steps >= 0 and online.every_epochs > 0,
             'online_eval needs lr > 0, every_steps >= 0 and every_epochs > 0')
    _require(online.lr_schedule in online_eval.LR_SCHEDULES,
             f'online_eval.lr_schedule={online.lr_schedule!r} is not one of '
             f'{", ".join(online_eval.LR_SCHEDULES)}')
    _require(online.bank_size == 0 or online.bank_size >= max(online.knn_k),
             f'online_eval.bank_size={online.bank_size} is smaller than the largest k '
             f'{max(online.knn_k)}')
  _require(config.get('compute_dtype', 'float32') in models.COMPUTE_DTYPES,
           f'unknown compute_dtype {config.get("compute_dtype")!r}; choose from '
           f'{", ".join(models.COMPUTE_DTYPES)}')
  _require(config.get('compute_dtype') != 'float64' or jax.config.jax_enable_x64,
           "compute_dtype='float64' needs 64-bit JAX: set JAX_ENABLE_X64=1")

  loss = config.loss
  for name in ('lam', 'beta'):
    _require(name not in loss or 0.0 <= loss[name] < 1.0,
             f'forgetting factor loss.{name}={loss.get(name)} must be in [0, 1)')
  _require('target_momentum' not in loss or 0.0 <= loss.target_momentum <= 1.0,
           f'loss.target_momentum={loss.get("target_momentum")} must be in [0, 1]')
  for name in ('alpha', 'eps'):
    _require(name not in loss or loss[name] >= 0,
             f'loss.{name}={loss.get(name)} must be non-negative')
  for name in ('temperature', 'gamma', 'order', 'power_steps', 'mu'):
    _require(name not in loss or loss[name] > 0,
             f'loss.{name}={loss.get(name)} must be positive')

  devices = jax.device_count()
  _require(config.batch_size > 0 and config.batch_size % devices == 0,
           f'batch_size={config.batch_size} must be a positive multiple of the {devices} devices')
  _require(config.total_steps > 0 or config.num_epochs > 0,
           'set a positive num_epochs or total_steps')
  for name in ('log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
    _require(config[name] > 0, f'{name}={config[name]} must be positive')
  _require(config.diagnostics_every_steps >= 0,
           f'diagnostics_every_steps={config.diagnostics_every_steps} must be >= 0')
  _require(config.model.width > 0, f'model.width={config.model.width} must be positive')
  dims = tuple(config.projector.dims)
  _require(dims and min(dims) > 0, f'projector.dims={dims} must be positive sizes')
  opt = config.optimizer
  _require(opt.peak_lr > 0 and opt.min_lr >= 0 and opt.warmup_init_lr >= 0,
           'optimizer learning rates must be positive (peak_lr) and non-negative')
  _require(opt.name in OPTIMIZERS,
           f'unknown optimizer.name {opt.name!r}; known: {", ".join(OPTIMIZERS)}')
  _require(opt.base_batch_size >= 0,
           f'optimizer.base_batch_size={opt.base_batch_size} must be >= 0 (0: no lr scaling)')
  _require(opt.lars_eta > 0, f'optimizer.lars_eta={opt.lars_eta} must be positive')
  _require(0.0 <= opt.momentum < 1.0, f'optimizer.momentum={opt.momentum} must be in [0, 1)')
  _require(opt.weight_decay >= 0, f'optimizer.weight_decay={opt.weight_decay} must be >= 0')
  if 'augment' in config:
    aug = config.augment
    low, high = tuple(aug.crop_scale)
    _require(0 < low <= high <= 1, f'augment.crop_scale={(low, high)}: expected 0 < min <= max <= 1')
    _require(min(aug.jitter) >= 0 and aug.jitter[3] <= 0.5,
             f'augment.jitter={tuple(aug.jitter)}: strengths >= 0, hue <= 0.5')
    for view in ('view1', 'view2'):
      for name, p in aug[view].items():
        _require(0 <= p <= 1, f'augment.{view}.{name}={p} must be a probability in [0, 1]')
  per = opt.get('lr_schedule_per', 'step')
  _require(per in ('step', 'epoch'),
           f"optimizer.lr_schedule_per={per!r}: expected 'step' or 'epoch'")
  _require(per == 'step' or not opt.warmup_steps,
           f"optimizer.lr_schedule_per='epoch' warms up over optimizer.warmup_epochs; "
           f'warmup_steps={opt.warmup_steps} needs lr_schedule_per=step')

  # Tracing the loss on abstract embeddings catches its own option errors (e.g. loss.logdet).
  views = {k: jax.ShapeDtypeStruct((config.batch_size, dims[-1]), np.float32)
           for k in ('z1', 'z2', 't1', 't2', 'p1', 'p2')}
  jax.eval_shape(lambda v: module.loss_fn(v, module.init_state(dims[-1], loss), loss), views)


def validate_batch(config, num_train):
  if config.batch_size > num_train:
    raise ValueError(f'batch_size={config.batch_size} exceeds the {num_train} training images')


def _names(path):
  return tuple(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def leaf_shapes(tree):
  """{path names: shape} of every array (or array metadata) in `tree`."""
  return {_names(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, 'shape'))[0]}


def validate_checkpoint(abstract_state, manager):
  """The latest checkpoint must hold arrays of the shapes this config builds."""
  step = manager.latest_step()
  where = f'checkpoint {manager.directory}/{step} does not match the config'
  stored = leaf_shapes(manager.item_metadata(step).state)
  for names, shape in leaf_shapes(abstract_state).items():
    name = '/'.join(names)
    if names not in stored:
      raise ValueError(f'{where}: it has no {name}')
    if stored[names] != shape:
      raise ValueError(f'{where}: {name} is {stored[names]}, the config builds {shape}')
