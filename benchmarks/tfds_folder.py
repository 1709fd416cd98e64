"""A TFDS data set made from an image folder <root>/train/<class>/<file>, the JPEG bytes kept as
they are: the benchmarks' stand-in for a prepared imagenet2012 (a builder must live in a module
of a package, not in the script that runs)."""
import os

import tensorflow_datasets as tfds


def build(folder, data_dir, file_format='array_record'):
  """Prepares `folder` as the TFDS data set 'image_folder_records' in `data_dir`."""
  ImageFolderRecords.folder = folder
  ImageFolderRecords(data_dir=data_dir, file_format=file_format).download_and_prepare()


class ImageFolderRecords(tfds.core.GeneratorBasedBuilder):
  """The train split of an image folder, one record (JPEG bytes, label) per file."""
  VERSION = tfds.core.Version('1.0.0')
  folder = None

  def _classes(self):
    return sorted(os.listdir(os.path.join(self.folder, 'train')))

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
        'label': tfds.features.ClassLabel(names=self._classes())}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for label, name in enumerate(self._classes()):
      directory = os.path.join(self.folder, 'train', name)
      for file in sorted(os.listdir(directory)):
        yield f'{name}/{file}', {'image': os.path.join(directory, file), 'label': label}
