"""Data sources and tf.data pipelines.

Sources (config.data.source):
  sample   the class-balanced CIFAR-10 sample shipped in infomax_jax/data (see its README)
  archive  a tar(.gz) laid out as <root>/<split>/<class>/<image>, like the shared CIFAR-10 one
  folder   an image-folder tree <path>/<split>/<class>/<image>
  tfds     a TensorFlow Datasets name (config.data.tfds_name), e.g. cifar10, cifar100

The pretraining stream is index-based: global example k of the run is image
index_shuffle(k mod n, seed, epoch = k div n) with augmentation seeds derived from (seed, k). A batch
is therefore a pure function of (seed, step): each host reads its own slice of every global batch
and a restart at step s continues exactly the stream an uninterrupted run would have seen.
"""
import dataclasses
import io
import os
import tarfile
from typing import Optional

import numpy as np
import tensorflow as tf

from infomax_jax import augment

SAMPLE_ARCHIVE = os.path.join(os.path.dirname(__file__), 'data', 'cifar10_sample.tar.gz')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
SOURCES = ('sample', 'archive', 'folder', 'tfds')


@dataclasses.dataclass
class Examples:
  """One split in memory: decoded images (when cached) or encoded bytes / file paths."""
  labels: np.ndarray
  class_names: list
  images: Optional[np.ndarray] = None    # uint8 [n, h, w, 3], all the same size
  encoded: Optional[list] = None         # JPEG/PNG bytes
  paths: Optional[list] = None           # image files, read on the fly

  def __len__(self):
    return len(self.labels)


def _group_by_class(items, what):
  """items: (class name, payload) pairs → payloads and labels sorted by class then name."""
  if not items:
    raise ValueError(f'no images found in {what}')
  class_names = sorted({c for c, _ in items})
  index = {c: i for i, c in enumerate(class_names)}
  items = sorted(items, key=lambda item: (index[item[0]], item[1][0]))
  return [p for _, p in items], np.array([index[c] for c, _ in items], np.int32), class_names


def _read_archive(path, split):
  if not os.path.isfile(path):
    raise FileNotFoundError(f'data archive not found: {path}')
  items = []
  try:
    with tarfile.open(path) as archive:
      for member in archive:
        parts = member.name.split('/')
        if (member.isfile() and len(parts) >= 3 and parts[-3] == split
            and parts[-1].lower().endswith(IMAGE_EXTENSIONS)):
          items.append((parts[-2], (member.name, archive.extractfile(member).read())))
  except tarfile.TarError as e:
    raise ValueError(f'cannot read data archive {path}: {e}') from None
  payloads, labels, class_names = _group_by_class(items, f'split {split!r} of archive {path}')
  return Examples(labels, class_names, encoded=[data for _, data in payloads])


def _read_folder(path, split):
  root = os.path.join(path, split)
  if not os.path.isdir(root):
    raise FileNotFoundError(f'image folder not found: {root}')
  items = []
  for class_name in os.listdir(root):
    class_dir = os.path.join(root, class_name)
    if os.path.isdir(class_dir):
      items += [(class_name, (f, os.path.join(class_dir, f))) for f in os.listdir(class_dir)
                if f.lower().endswith(IMAGE_EXTENSIONS)]
  payloads, labels, class_names = _group_by_class(items, f'image folder {root}')
  return Examples(labels, class_names, paths=[p for _, p in payloads])


def _read_tfds(name, split, data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    builder.download_and_prepare()
    ds = builder.as_dataset(split=split, as_supervised=True)
  except Exception as e:  # tfds raises many types; the user needs the one line.
    raise ValueError(f'cannot load TFDS data set {name!r} split {split!r}: '
                     f'{str(e).splitlines()[0] if str(e) else type(e).__name__}') from None
  images, labels = zip(*tfds.as_numpy(ds))
  return Examples(np.array(labels, np.int32), builder.info.features['label'].names,
                  images=np.stack(images))


def _decode(data, name):
  try:
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
  except (tf.errors.InvalidArgumentError, ValueError):
    raise ValueError(f'corrupt or unreadable image: {name}') from None
  return image.numpy()


def _decode_all(examples, names):
  """Decode every image once; returns Examples with a stacked uint8 array if sizes agree."""
  if examples.encoded is not None:
    blobs = examples.encoded
  else:
    blobs = []
    for path in examples.paths:
      with open(path, 'rb') as f:
        blobs.append(f.read())
  images = [_decode(b, n) for b, n in zip(blobs, names)]
  if len({im.shape for im in images}) != 1:
    return dataclasses.replace(examples, encoded=blobs, paths=None)
  return Examples(examples.labels, examples.class_names, images=np.stack(images))


def load_split(data_config, split):
  """Reads one split of the configured source. Errors are one line and name the culprit."""
  source = data_config.source
  if source == 'sample':
    examples = _read_archive(SAMPLE_ARCHIVE, split)
  elif source == 'archive':
    examples = _read_archive(data_config.path, split)
  elif source == 'folder':
    examples = _read_folder(data_config.path, split)
  elif source == 'tfds':
    return _read_tfds(data_config.tfds_name, split, data_config.get('tfds_data_dir') or None)
  else:
    raise ValueError(f'unknown data source {source!r}; known sources: {", ".join(SOURCES)}')
  if data_config.cache_decoded:
    names = examples.paths or [f'{split} image {i} of {data_config.path or SAMPLE_ARCHIVE}'
                               for i in range(len(examples))]
    examples = _decode_all(examples, names)
  return examples


def _image_fn(examples):
  """index (int64 scalar tensor) → float32 image in [0, 1]."""
  if examples.images is not None:
    table = tf.constant(examples.images)
    return lambda i: tf.cast(tf.gather(table, i), tf.float32) / 255.0
  if examples.encoded is not None:
    table = tf.constant(examples.encoded)
    read = lambda i: tf.gather(table, i)
  else:
    table = tf.constant(examples.paths)
    read = lambda i: tf.io.read_file(tf.gather(table, i))
  return lambda i: tf.cast(
      tf.io.decode_image(read(i), channels=3, expand_animations=False), tf.float32) / 255.0


def _example_seed(seed, k):
  return tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), k)


def _shuffled_index(k, n, seed):
  epoch = k // n
  return tf.random.experimental.index_shuffle(
      k % n, tf.stack([tf.constant(seed, tf.int64), epoch]), n - 1)


def _host_positions(start_step, global_batch, process_index, process_count):
  """Global example positions that this host reads, step by step, from `start_step` on."""
  if global_batch % process_count:
    raise ValueError(f'global batch {global_batch} is not divisible by the {process_count} hosts')
  per_host = global_batch // process_count
  offset = process_index * per_host
  steps = tf.data.Dataset.counter(start_step)
  return steps.flat_map(lambda s: tf.data.Dataset.range(
      s * global_batch + offset, s * global_batch + offset + per_host)), per_host


def pretrain_dataset(examples, config, start_step=0, process_index=0, process_count=1):
  """Infinite stream of per-host batches {'view1', 'view2'} of float32 [b, s, s, 3] views."""
  data = config.data
  n = len(examples)
  image_of = _image_fn(examples)
  positions, per_host = _host_positions(start_step, config.batch_size, process_index,
                                        process_count)

  def two_views(k):
    seeds = tf.random.experimental.stateless_split(_example_seed(config.seed, k), 2)
    image = image_of(_shuffled_index(k, n, config.seed))
    return {f'view{q + 1}': augment.pretrain_view(image, seeds[q], data.image_size,
                                                  augment.VIEW_PROBABILITIES[q], data.normalization)
            for q in range(2)}

  ds = positions.map(two_views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(per_host, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def probe_dataset(examples, data_config, batch_size, train, seed=0, epoch=0):
  """One pass over a split, in order for test, shuffled per epoch for train; the last batch is
  padded to `batch_size` and carries a 'mask' so every example is seen exactly once."""
  n = len(examples)
  image_of = _image_fn(examples)
  labels = tf.constant(examples.labels)
  size, norm = data_config.image_size, data_config.normalization

  def element(k):
    if train:
      index = _shuffled_index(tf.cast(epoch * n, tf.int64) + k, n, seed)
      view = augment.probe_train_view(image_of(index), _example_seed(seed, epoch * n + k), size, norm)
    else:
      index = k
      view = augment.probe_test_view(image_of(index), size, norm)
    return {'image': view, 'label': tf.gather(labels, index), 'mask': tf.constant(True)}

  padded = -(-n // batch_size) * batch_size
  ds = tf.data.Dataset.range(n).map(element, num_parallel_calls=tf.data.AUTOTUNE,
                                    deterministic=True)
  blank = tf.data.Dataset.range(padded - n).map(lambda _: {
      'image': tf.zeros([size, size, 3]), 'label': tf.constant(0, tf.int32),
      'mask': tf.constant(False)})
  return ds.concatenate(blank).batch(batch_size).prefetch(tf.data.AUTOTUNE)
