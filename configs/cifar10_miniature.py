"""The thesis CIFAR-10 comparison in miniature, for a 2-core CPU (benchmarks/reproduce.py,
docs/results.md): the full CIFAR-10 train split, every loss under the same fixed budget.

    python benchmarks/reproduce.py --config=configs/cifar10_miniature.py --root=/tmp/repro \
        --override=--config.data.path=/data/cifar10-jpeg.tar.gz --curve

Thesis CIFAR-10 hyper-parameters (configs/cifar10.py: SGD lr 0.5 → 1e-6 cosine, momentum 0.9,
weight decay 1e-4, each loss's paper defaults) with the demo's narrow ResNet-18 (width 0.25) and
projector (512-512-64); batch 128 for 500 steps (1.3 epochs) with 50 warm-up steps. Data: a tar
archive laid out <root>/<split>/<class>/<image> (the shared cifar10-jpeg.tar.gz) given by
--config.data.path. Argument: the loss name.
"""
from configs import cifar10


def get_config(arg=None):
  config = cifar10.get_config(arg)
  config.data.source = 'archive'
  config.model.width = 0.25
  config.projector.dims = (512, 512, 64)
  config.batch_size = 128
  config.num_epochs = 0
  config.total_steps = 500
  config.optimizer.warmup_steps = 50
  config.checkpoint_every_steps = 125
  config.log_every_steps = 25
  return config
