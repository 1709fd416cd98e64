"""A TFDS data set built offline by the tests (a builder must live in a package module)."""
import numpy as np
import tensorflow_datasets as tfds


class TinyImages(tfds.core.GeneratorBasedBuilder):
  """24 random 12×20 images in 3 classes, prepared offline by the tests."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, 3)),
        'label': tfds.features.ClassLabel(names=['a', 'b', 'c'])}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(24)}

  def _generate_examples(self, count):
    rng = np.random.default_rng(0)
    for i in range(count):
      yield i, {'image': rng.integers(0, 256, (12, 20, 3), np.uint8), 'label': i % 3}
