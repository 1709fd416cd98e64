"""CIFAR-10, ResNet-18 with the CIFAR stem: thesis §5.2, TRAINING.md optimisation table row 1,
reference Table 5.1 column 1 (CorInfoMax 93.18 % top-1).

    python -m infomax_jax.main --config=configs/cifar10.py:corinfomax --workdir=/runs/c10
    python -m infomax_jax.main --config=configs/cifar10.py:vicreg --workdir=/runs/c10_vicreg \
        --config.data.tfds_data_dir=/data/tfds

Data: TFDS `cifar10` (lossless); a JPEG archive (`--config.data.source=archive`) is only the
CPU stand-in of the tests and the miniature.

1000 epochs, batch 512, SGD lr 0.5 → 1e-6 cosine after 10 warm-up epochs from 0.003 (moved
once per epoch, as the official code's scheduler; `--config.optimizer.lr_schedule_per=step` moves
it every step), momentum 0.9, weight decay 1e-4; projector 2048-2048-64; CorInfoMax alpha 250, lam 0.01, eps 1e-8.
Argument: the loss name (default corinfomax).
"""
from configs import common


def get_config(arg=None):
  architecture, loss = common.parse_arg(arg, ('r18',), 'r18')
  return common.thesis_config(
      loss, architecture, data=dict(source='tfds', tfds_name='cifar10'), image_size=32,
      normalization='cifar10', cifar_stem=True, projector_dims=(2048, 2048, 64), epochs=1000,
      batch_size=512, peak_lr=0.5, min_lr=1e-6, alpha=250.0, lam=0.01)
