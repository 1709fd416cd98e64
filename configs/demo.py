"""The embedded default: a narrow ResNet-18 on the CIFAR-10 sample shipped in the package.

Sized to pretrain and probe in a few minutes on a 2-core CPU; the hyper-parameters are the thesis
CIFAR-10 ones (configs/cifar10.py) except width, batch and schedule length, and the thesis
projector 2048-2048-64 shrunk to 512-512-64; a loss with a recipe projector of its own
(`PROJECTOR_DIMS`: SimCLR, Barlow Twins, VICReg, BYOL, SimSiam, MoCo v2, W-MSE) keeps it, as in
configs/cifar10.py.
Argument: the loss name (default corinfomax).
"""
from configs import cifar10
from infomax_jax import losses


def get_config(arg=None):
  config = cifar10.get_config(arg)
  config.data.source = 'sample'
  config.model.width = 0.25
  if not hasattr(losses.get(config.loss.name), 'PROJECTOR_DIMS'):
    config.projector.dims = (512, 512, 64)
  config.batch_size = 256
  config.num_epochs = 0
  config.total_steps = 300
  config.optimizer.warmup_steps = 30
  config.optimizer.lr_schedule_per = 'step'   # 7.7 epochs: per-epoch steps would be too coarse
  config.checkpoint_every_steps = 100
  config.log_every_steps = 20
  config.online_eval.every_steps = 100   # 3 evaluations; bank: every sample train image
  if 'queue_size' in config.loss:
    # MoCo: solo-learn's queue holds 32,768 keys of CIFAR-10's 50,000 images (65 %); of the
    # 10,000-image sample it would hold every image ~3 times, i.e. earlier keys of each query's own
    # image as negatives. The same 65 % share, in whole batches: 25 × 256.
    config.loss.queue_size = 6400
  # The cached-feature linear probe (`linear_cached`): the thesis protocol's fresh views of
  # the sample cost ~10 s per epoch on a 2-core CPU (3 epochs in 36 s), ~17 min per encoder.
  config.probe.augment = False
  return config
