"""CIFAR-100, ResNet-18 with the CIFAR stem: TRAINING.md optimisation table row 2, reference
Table 5.1 column 2 (CorInfoMax 71.61 % top-1); sensitivity Tables 5.4–5.7 vary alpha, batch,
lr and the projector output around these values.

    python -m infomax_jax.main --config=configs/cifar100.py:corinfomax --workdir=/runs/c100

1000 epochs, batch 512, SGD lr 0.5 → 1e-6; projector 4096-4096-128; CorInfoMax alpha 1000,
lam 0.01. Argument: the loss name (default corinfomax).
"""
from configs import common


def get_config(arg=None):
  architecture, loss = common.parse_arg(arg, ('r18',), 'r18')
  return common.thesis_config(
      loss, architecture, data=dict(source='tfds', tfds_name='cifar100'), image_size=32,
      normalization='cifar100', cifar_stem=True, projector_dims=(4096, 4096, 128), epochs=1000,
      batch_size=512, peak_lr=0.5, min_lr=1e-6, alpha=1000.0, lam=0.01)
