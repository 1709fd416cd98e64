"""CIFAR-10, ResNet-18 (CIFAR stem), thesis §5.2 / TRAINING.md: 1000 epochs, batch 512.

    python -m infomax_jax.main --config=configs/cifar10.py --workdir=/tmp/cifar10 \
        --config.data.source=archive --config.data.path=/data/cifar10-jpeg.tar.gz

Thesis values: alpha 250, lam 0.01, eps 1e-8, projector 2048-2048-64, SGD lr 0.5 → 1e-6 cosine
after 10 warm-up epochs from 0.003, momentum 0.9, weight decay 1e-4.
"""
from configs import common


def get_config(arg=None):
  config = common.base_config(arg)
  config.data.source = 'tfds'
  config.data.tfds_name = 'cifar10'
  config.data.normalization = 'cifar10'
  config.data.image_size = 32
  config.model.name = 'resnet18'
  config.model.cifar_stem = True
  config.projector.dims = (2048, 2048, 64)
  config.batch_size = 512
  config.num_epochs = 1000
  config.optimizer.peak_lr = 0.5
  config.optimizer.min_lr = 1e-6
  if config.loss.name == 'corinfomax':
    config.loss.alpha = 250.0
    config.loss.lam = 0.01
  return config
