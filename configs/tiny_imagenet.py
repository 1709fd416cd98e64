"""Tiny-ImageNet (64 px, 200 classes), ResNet-50: TRAINING.md optimisation table row 3,
reference Table 5.1 column 3 (CorInfoMax 54.86 % top-1).

    python -m infomax_jax.main --config=configs/tiny_imagenet.py:r50,corinfomax \
        --workdir=/runs/tiny --config.data.path=/data/tiny-imagenet-200

Data: an image-folder tree <path>/{train,val}/<class>/<image> (move the official val images into
class folders using val_annotations.txt). Standard ResNet-50 stem, 64-px crops, ImageNet
normalisation; 800 epochs, batch 1024, SGD lr 0.5 → 1e-6; projector 4096-4096-128; CorInfoMax
alpha 500, lam 0.1. Argument: r50 (the only one) and the loss name.
"""
from configs import common


def get_config(arg=None):
  architecture, loss = common.parse_arg(arg, ('r50',), 'r50')
  return common.thesis_config(
      loss, architecture,
      data=dict(source='folder', train_split='train', test_split='val', cache_decoded='never'),
      image_size=64, normalization='imagenet', cifar_stem=False,
      projector_dims=(4096, 4096, 128), epochs=800, batch_size=1024, peak_lr=0.5, min_lr=1e-6,
      alpha=500.0, lam=0.1)
