"""Defaults shared by every experiment config; a config file starts from `base_config(...)`.

`arg` is the text after the colon in `--config=configs/<file>.py:<arg>`: comma-separated words,
an architecture (`r18`, `r50`) where the data set has several, and a loss name, in any order
(e.g. `configs/imagenet100.py:r50,emi`).
"""
import ml_collections

from infomax_jax import augment_config
from infomax_jax import evaluation_config
from infomax_jax import losses
from infomax_jax import sources

ARCHITECTURES = {'r18': 'resnet18', 'r50': 'resnet50'}


def parse_arg(arg, architectures, default_architecture):
  """(architecture, loss name) from a config argument; one-line error for anything else."""
  architecture, loss = default_architecture, 'corinfomax'
  for word in [w.strip() for w in (arg or '').split(',') if w.strip()]:
    if word in architectures:
      architecture = word
    elif word in losses.names():
      loss = word
    else:
      raise ValueError(f'unknown config argument {word!r}; expected one of the architectures '
                       f'{", ".join(architectures)} and/or a loss ({", ".join(losses.names())})')
  return architecture, loss


def base_config(loss='corinfomax', architecture='r18'):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 512            # global, over all devices and hosts
  config.num_epochs = 1000           # of the training split; total_steps > 0 overrides it
  config.total_steps = 0
  config.compute_dtype = 'float32'   # 'bfloat16': encoder/projector compute; params, losses f32
                                     # 'float64' (JAX_ENABLE_X64=1): reference precision

  config.data = ml_collections.ConfigDict(dict(
      source='sample', path='', tfds_name='', tfds_data_dir='', **sources.STREAMING_DEFAULTS,
      train_split='train', test_split='test', image_size=32, normalization='cifar10',
      synthetic_examples=50_000, synthetic_pool=2))   # source='synthetic' (data.py)
  config.model = ml_collections.ConfigDict(dict(
      name=ARCHITECTURES[architecture], width=1.0, cifar_stem=True))
  config.loss = losses.default_config(loss)
  module = losses.get(loss)
  config.projector = ml_collections.ConfigDict(dict(
      dims=getattr(module, 'PROJECTOR_DIMS', (2048, 2048, 64)),
      hidden_batchnorm=module.PROJECTOR_HIDDEN_BATCHNORM,
      l2_normalize=module.L2_NORMALIZED_EMBEDDINGS,
      output_batchnorm=getattr(module, 'PROJECTOR_OUTPUT_BATCHNORM', False)))
  # BYOL and SimSiam: Linear → BN → ReLU → Linear onto the projector's output size; 0: none.
  config.predictor = ml_collections.ConfigDict(dict(
      hidden_dim=getattr(module, 'PREDICTOR_HIDDEN_DIM', 0)))
  config.optimizer = ml_collections.ConfigDict(dict(
      name='sgd', peak_lr=0.5, base_batch_size=0, min_lr=1e-6, warmup_init_lr=0.003,
      warmup_epochs=10, warmup_steps=0, momentum=0.9, weight_decay=1e-4, lars_eta=0.02,
      lars_clip_lr=False,        # solo-learn's clip_lr (train.scale_by_lars)
      predictor_fixed_lr=False,  # the predictor at the constant peak rate (SimSiam)
      lr_schedule_per='step'))   # or 'epoch' (train.learning_rate_schedule)
  config.optimizer.update(getattr(module, 'OPTIMIZER', {}))
  # Table B.1, or the loss's own CIFAR recipe (solo-learn) where it declares one.
  config.augment = augment_config.augment_config(**getattr(module, 'AUGMENTATIONS', {}))

  config.log_every_steps = 50
  config.diagnostics_every_steps = 0   # 0: at every log step
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.max_skipped_batches = 0      # non-finite steps tolerated (skipped) before stopping

  config.probe = evaluation_config.probe_config()
  config.online_eval = evaluation_config.online_eval_config()
  return config


def thesis_config(loss, architecture, *, data, image_size, normalization, cifar_stem,
                  projector_dims, epochs, batch_size, peak_lr, min_lr, alpha, lam,
                  hidden_batchnorm=None, online_every_epochs=10.0, online_bank_size=10_000):
  """A thesis experiment: one row of TRAINING.md's optimisation table (thesis §5.2.5, App. B.2).

  `online_every_epochs`/`online_bank_size`: the online evaluation's schedule and kNN bank.
  `alpha`/`lam` are CorInfoMax's; the other losses keep their papers' defaults
  (`losses.default_config`), with the data set's encoder, projector, batch and schedule.
  `peak_lr`/`min_lr` are the thesis SGD's, with the learning rate moved once per epoch as the
  official code's scheduler; a loss whose module declares an `OPTIMIZER` (VICReg, Barlow Twins:
  LARS) keeps that one and solo-learn's per-step schedule, as solo-learn trains the Table 5.1
  baselines.
  """
  config = base_config(loss, architecture)
  config.data.update(data)
  config.data.image_size = image_size
  config.data.normalization = normalization
  config.model.cifar_stem = cifar_stem
  config.projector.dims = tuple(getattr(losses.get(loss), 'PROJECTOR_DIMS', projector_dims))
  if hidden_batchnorm is not None:
    config.projector.hidden_batchnorm = hidden_batchnorm
  config.num_epochs = epochs
  config.batch_size = batch_size
  config.online_eval.every_epochs = online_every_epochs
  config.online_eval.bank_size = online_bank_size
  if not hasattr(losses.get(loss), 'OPTIMIZER'):   # those keep their own recipe's optimizer
    config.optimizer.peak_lr = peak_lr
    config.optimizer.min_lr = min_lr
    # The official CorInfoMax code steps its scheduler once per epoch (solo-learn every step).
    config.optimizer.lr_schedule_per = 'epoch'
  if loss == 'corinfomax':
    config.loss.alpha = alpha
    config.loss.lam = lam
  if image_size > 32:   # solo-learn's recipes are CIFAR's; larger images get Table B.1 (BYOL's)
    config.augment = augment_config.augment_config()
  module = losses.get(loss)
  if image_size <= 64:   # the loss's CIFAR recipe values (solo-learn), where not its paper's
    config.loss.update(getattr(module, 'CIFAR_LOSS', {}))
  else:   # the loss's ImageNet recipe (its paper), where it differs from its CIFAR one
    config.loss.update(getattr(module, 'IMAGENET_LOSS', {}))
    config.optimizer.update(getattr(module, 'IMAGENET_OPTIMIZER', {}))
    config.projector.dims = tuple(getattr(module, 'IMAGENET_PROJECTOR_DIMS',
                                          config.projector.dims))
  if 'queue_size' in config.loss:   # a queue takes whole global batches (MoCo, as solo-learn)
    config.loss.queue_size -= config.loss.queue_size % batch_size
  return config
