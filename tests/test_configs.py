"""Every experiment config (configs/*.py × architecture × loss) builds, carries its thesis values,
and runs one training step with tiny overrides; bad config arguments are one-line errors."""
import functools
import importlib
import os

import jax
import numpy as np
import pytest

from infomax_jax import augment_config
from infomax_jax import losses
from infomax_jax import models
from infomax_jax import train
from infomax_jax import validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# config file → (architectures, thesis row of TRAINING.md: epochs, batch, peak lr, alpha, lam,
# projector dims, of the losses without a recipe projector); demo is the CIFAR-10 row shrunk for
# CPUs.
EXPERIMENTS = {
    'cifar10': (('r18',), dict(batch_size=512, peak_lr=0.5, alpha=250, lam=0.01,
                              dims=(2048, 2048, 64), image_size=32)),
    'cifar100': (('r18',), dict(batch_size=512, peak_lr=0.5, alpha=1000, lam=0.01,
                               dims=(4096, 4096, 128), image_size=32)),
    'tiny_imagenet': (('r50',), dict(batch_size=1024, peak_lr=0.5, alpha=500, lam=0.1,
                                     dims=(4096, 4096, 128), image_size=64)),
    'imagenet100': (('r18', 'r50'), dict(batch_size=1024, peak_lr=1.0, alpha=500, lam=0.1,
                                         dims=(4096, 4096, 128), image_size=224)),
    'imagenet1k': (('r50',), dict(batch_size=1536, peak_lr=0.2, alpha=2000, lam=0.1,
                                  dims=(8192, 8192, 512), image_size=224)),
    'demo': (('r18',), dict(batch_size=256, peak_lr=0.5, alpha=250, lam=0.01,
                            dims=(512, 512, 64), image_size=32)),
    'cifar10_miniature': (('r18',), dict(batch_size=128, peak_lr=0.5, alpha=250, lam=0.01,
                                         dims=(512, 512, 64), image_size=32)),
    'quickstart': (('r18',), dict(batch_size=128, peak_lr=0.5, alpha=250, lam=0.01,
                                  dims=(512, 512, 64), image_size=32)),
}
EPOCHS = {('cifar10', 'r18'): 1000, ('cifar100', 'r18'): 1000, ('tiny_imagenet', 'r50'): 800,
          ('imagenet100', 'r18'): 400, ('imagenet100', 'r50'): 200, ('imagenet1k', 'r50'): 100,
          ('demo', 'r18'): 0, ('cifar10_miniature', 'r18'): 0, ('quickstart', 'r18'): 0}
CASES = [(name, arch) for name, (archs, _) in EXPERIMENTS.items() for arch in archs]
# quickstart is the demo at another batch size: the same step program, not run again.
STEP_CASES = [case for case in CASES if case[0] != 'quickstart']


def test_every_config_file_is_covered():
  files = {f[:-3] for f in os.listdir(os.path.join(ROOT, 'configs'))
           if f.endswith('.py') and f not in ('__init__.py', 'common.py')}
  assert files == set(EXPERIMENTS)


@pytest.mark.parametrize('name,arch', CASES)
def test_config_carries_thesis_values_for_every_loss(name, arch):
  module = importlib.import_module(f'configs.{name}')
  expected = EXPERIMENTS[name][1]
  for loss in losses.names():
    config = module.get_config(f'{arch},{loss}')
    if config.data.source in ('folder', 'archive'):   # their path comes from the command line
      config.data.path = '/data/images'
    validation.validate_config(config)
    assert config.loss.name == loss
    assert config.model.name == {'r18': 'resnet18', 'r50': 'resnet50'}[arch]
    assert config.num_epochs == EPOCHS[(name, arch)]
    assert config.batch_size == expected['batch_size']
    loss_module = losses.get(loss)
    recipe = getattr(loss_module, 'OPTIMIZER', None)   # the solo-learn baselines' own optimizers
    if recipe:
      if expected['image_size'] > 64:   # their papers' ImageNet optimizers
        recipe = dict(recipe, **getattr(loss_module, 'IMAGENET_OPTIMIZER', {}))
      assert {k: config.optimizer[k] for k in recipe} == recipe
    else:
      assert (config.optimizer.name, config.optimizer.peak_lr) == ('sgd', expected['peak_lr'])
    own = getattr(loss_module, 'PROJECTOR_DIMS', expected['dims'])   # the loss's recipe
    if expected['image_size'] > 64:
      own = getattr(loss_module, 'IMAGENET_PROJECTOR_DIMS', own)
    assert tuple(config.projector.dims) == own
    assert config.data.image_size == expected['image_size']
    assert config.model.cifar_stem == (expected['image_size'] == 32)
    assert config.projector.l2_normalize == losses.get(loss).L2_NORMALIZED_EMBEDDINGS
    assert config.projector.hidden_batchnorm == (
        name == 'imagenet1k' or losses.get(loss).PROJECTOR_HIDDEN_BATCHNORM)
    if loss == 'corinfomax':
      assert (config.loss.alpha, config.loss.lam) == (expected['alpha'], expected['lam'])
    if losses.uses_target_network(config.loss):
      assert 0 < config.loss.target_momentum < 1
    if loss == 'simclr':
      assert config.loss.temperature == (0.1 if expected['image_size'] == 224 else 0.2)
    if expected['image_size'] == 224:   # the loss's ImageNet values (BYOL's 0.996, MoCo's 0.999)
      imagenet = getattr(losses.get(loss), 'IMAGENET_LOSS', {})
      assert all(config.loss[k] == v for k, v in imagenet.items() if k != 'queue_size')
    cifar_loss = getattr(loss_module, 'CIFAR_LOSS', {}) if expected['image_size'] <= 64 else {}
    assert all(config.loss[k] == v for k, v in cifar_loss.items())   # e.g. Barlow's scale 0.1
    cifar_recipe = getattr(loss_module, 'AUGMENTATIONS', {})   # solo-learn's CIFAR settings
    assert config.augment.to_dict() == augment_config.augment_config(
        **(cifar_recipe if expected['image_size'] == 32 else {})).to_dict()
    if 'queue_size' in config.loss:   # whole global batches, as large as the recipe allows
      assert config.loss.queue_size % config.batch_size == 0
      recipe = 65536 if expected['image_size'] > 64 else 32768
      if name in ('demo', 'quickstart'):   # 65 % of the 10,000-image sample, as 32,768 of 50,000
        assert config.loss.queue_size == 6400
      else:
        assert config.loss.queue_size > recipe - config.batch_size
  # The argument's order does not matter and the loss defaults to CorInfoMax.
  assert module.get_config(f'corinfomax,{arch}').to_dict() == module.get_config(arch).to_dict()


# The ResNet-50 steps (~45 s each in a clean CI) run with the slow tests.
@pytest.mark.parametrize('case', [
    pytest.param(i, marks=pytest.mark.slow) if STEP_CASES[i][1] == 'r50' else i
    for i in range(len(STEP_CASES))])
def test_config_runs_one_step_with_tiny_overrides(case):
  """Each config (rotating through the losses, so that every loss runs once) builds its model,
  optimizer and state and runs one compiled training step at a tiny size, keeping its
  architecture, stem, projector BatchNorm and loss settings."""
  name, arch = STEP_CASES[case]
  loss = losses.names()[case % len(losses.names())]
  config = importlib.import_module(f'configs.{name}').get_config(f'{arch},{loss}')
  config.data.image_size = 32
  config.model.width = 1 / 16
  config.projector.dims = (32, 16)
  config.batch_size = 8
  config.optimizer.warmup_steps = 1
  model = models.build_model(config)
  tx = train.make_optimizer(config, num_train=80)
  mesh = train.make_mesh(jax.devices()[:1])
  state = jax.jit(functools.partial(train.create_train_state, config, model, tx))(
      jax.random.key(0))
  images = np.random.default_rng(case).normal(size=(2, 8, 32, 32, 3)).astype(np.float32)
  params = jax.device_get(state.params)   # the step donates `state`
  batch = {'view1': images[0], 'view2': images[1]}
  # Unoptimised machine code: compiling dominates this test and the step's result is the same.
  step = train.compile_train_step(config, model, tx, mesh, num_steps=10).lower(state, batch).compile(
      compiler_options={'xla_backend_optimization_level': 0})
  new_state, metrics = step(state, batch)
  assert int(new_state.step) == 1 and bool(metrics['finite'])
  assert np.isfinite(float(metrics['loss']))
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), new_state.params, params)
  assert any(jax.tree.leaves(changed))


@pytest.mark.parametrize('arg', ['r50', 'cifar', 'r18,vicregg'])
def test_bad_config_argument_is_one_line_error(arg):
  from configs import cifar10
  with pytest.raises(ValueError, match=r"unknown config argument '\w+'; expected") as error:
    cifar10.get_config(arg)
  assert '\n' not in str(error.value)
