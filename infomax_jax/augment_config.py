"""Defaults of the pretraining augmentations: `config.augment` (thesis App. B.1, Table B.1).

Kept apart from augment.py, which needs TensorFlow, so that configs import without it. A loss
module may declare its own recipe's values (`AUGMENTATIONS`, e.g. solo-learn's CIFAR settings),
which configs/common.py applies; override with --config.augment.<field>=<value>.
"""
import ml_collections

CROP_SCALE = (0.08, 1.0)         # RandomResizedCrop area fraction (min, max)
JITTER = (0.4, 0.4, 0.2, 0.1)    # ColorJitter brightness, contrast, saturation, hue
# Per-view probabilities of Table B.1 (the crop always applies, the flip with 0.5).
VIEW_PROBABILITIES = (
    {'jitter': 0.8, 'gray': 0.2, 'blur': 1.0, 'solarize': 0.0},
    {'jitter': 0.8, 'gray': 0.2, 'blur': 0.1, 'solarize': 0.2},
)


def augment_config(crop_scale=CROP_SCALE, jitter=JITTER, views=VIEW_PROBABILITIES):
  return ml_collections.ConfigDict(dict(crop_scale=tuple(crop_scale), jitter=tuple(jitter),
                                        view1=dict(views[0]), view2=dict(views[1])))
