"""The thesis CIFAR-10 comparison in miniature, for a 2-core CPU (benchmarks/reproduce.py,
docs/results.md): the full CIFAR-10 train split, every loss under the same fixed budget.

    python benchmarks/reproduce.py --config=configs/cifar10_miniature.py --root=/tmp/repro \
        --override=--config.data.path=/data/cifar10-jpeg.tar.gz --curve

The demo (configs/demo.py: thesis CIFAR-10 hyper-parameters, SGD lr 0.5 → 1e-6 cosine, momentum
0.9, weight decay 1e-4, each loss's paper defaults, narrow ResNet-18 of width 0.25, projector
512-512-64; the baselines with their solo-learn recipes, projector included) on the full data;
batch 128 for 500 steps (1.3 epochs) with 50 warm-up steps.
Data: a tar archive laid out <root>/<split>/<class>/<image> (the shared cifar10-jpeg.tar.gz)
given by --config.data.path. Argument: the loss name.
"""
from configs import demo


def get_config(arg=None):
  config = demo.get_config(arg)
  config.data.source = 'archive'
  config.batch_size = 128
  config.total_steps = 500
  config.optimizer.warmup_steps = 50
  config.checkpoint_every_steps = 125
  config.log_every_steps = 25
  config.online_eval.every_steps = 125
  if 'queue_size' in config.loss:   # MoCo: the full 50,000 images take solo-learn's queue
    config.loss.queue_size = 32768
  return config
