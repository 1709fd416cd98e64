"""ImageNet-1K, ResNet-50: TRAINING.md optimisation table row 6, reference Table 5.1 column 6
(CorInfoMax 69.08 % top-1) and the semi-supervised protocol (App. B.2.5).

    python -m infomax_jax.main --config=configs/imagenet1k.py:r50,corinfomax --workdir=/runs/in1k \
        --config.data.tfds_data_dir=gs://bucket/tfds

Data: TFDS imagenet2012 (prepared from the manual download), validation split as the test set.
224-px crops; 100 epochs, batch 1536, SGD lr 0.2 → 1e-6 (warm-up 10 epochs, moved once per
epoch as the official scheduler); projector 8192-8192-512 with hidden BatchNorm; CorInfoMax
alpha 2000, lam 0.1: the official command's value and TRAINING.md's, where the thesis text
says 0.01 (`--config.loss.lam=0.01`). Linear probe: step schedule from 25, ÷10 every 20 epochs.
Argument: r50 (the only one) and the loss name.
"""
from configs import common


def get_config(arg=None):
  architecture, loss = common.parse_arg(arg, ('r50',), 'r50')
  config = common.thesis_config(
      loss, architecture,
      data=dict(source='tfds', tfds_name='imagenet2012', test_split='validation',
                cache_decoded='never'),
      image_size=224, normalization='imagenet', cifar_stem=False,
      projector_dims=(8192, 8192, 512), epochs=100, batch_size=1536, peak_lr=0.2, min_lr=1e-6,
      alpha=2000.0, lam=0.1, hidden_batchnorm=True, online_every_epochs=1.0,
      online_bank_size=50_000)
  config.probe.schedule = 'step'
  return config
