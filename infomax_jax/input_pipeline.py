"""Data sources and tf.data pipelines.

Sources (config.data.source):
  sample   the class-balanced CIFAR-10 sample shipped in infomax_jax/data (see its README)
  archive  a tar(.gz) laid out as <root>/<split>/<class>/<image>, like the shared CIFAR-10 one
  folder   an image-folder tree <path>/<split>/<class>/<image>
  tfds     a TensorFlow Datasets name (config.data.tfds_name), e.g. cifar10, cifar100

With config.data.cache_decoded every image is decoded once at load time (a corrupt file stops
the load, naming it); images of one common size are then stacked in memory and augmented a
whole batch at a time. Otherwise images are decoded on the fly, one at a time, after a cheap
structural check of every file at load time (magic bytes, JPEG/PNG end marker).

The pretraining stream is index-based: global example k of the run is image
index_shuffle(k mod n, [seed, epoch = k div n]) and its random draws are block k of a Philox
stream keyed by the seed (`_draws`), so they depend on (seed, k) alone. A batch is therefore a
pure function of (seed, step): each host reads its own contiguous slice of every global batch,
and a restart at step s continues exactly the stream an uninterrupted run would have seen.
"""
import concurrent.futures
import dataclasses
import os
import socket
import tarfile
from typing import Optional

import numpy as np
from infomax_jax import cli  # before TensorFlow, whose start-up banner it silences
cli.import_tensorflow_quietly()
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from infomax_jax import augment
from infomax_jax import sources

SAMPLE_ARCHIVE = os.path.join(os.path.dirname(__file__), 'data', 'cifar10_sample.tar.gz')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
PRETRAIN_STREAM, PROBE_STREAM = 0, 1
_TAIL_BYTES = 4096   # where the structural check looks for a JPEG/PNG end marker


@dataclasses.dataclass
class Examples:
  """One split in memory: decoded images (when cached) or encoded bytes / file paths."""
  labels: np.ndarray
  class_names: list
  names: list                            # file path, archive member or TFDS example, for errors
  images: Optional[np.ndarray] = None    # uint8 [n, h, w, 3], all the same size
  encoded: Optional[list] = None         # JPEG/PNG/... bytes
  paths: Optional[list] = None           # image files, read on the fly

  def __len__(self):
    return len(self.labels)


def _group_by_class(items, what):
  """items: (class name, name, payload) → Examples fields sorted by class, then name."""
  if not items:
    raise ValueError(f'no images found in {what}')
  class_names = sorted({c for c, _, _ in items})
  index = {c: i for i, c in enumerate(class_names)}
  items = sorted(items, key=lambda item: (index[item[0]], item[1]))
  labels = np.array([index[c] for c, _, _ in items], np.int32)
  return labels, class_names, [name for _, name, _ in items], [p for _, _, p in items]


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
          items.append((parts[-2], f'{path}:{member.name}', archive.extractfile(member).read()))
  except (tarfile.TarError, OSError, EOFError) as e:
    reason = '; '.join(line.strip(' -:') for line in str(e).splitlines() if line.strip())
    raise ValueError(f'cannot read data archive {path}: {reason}') from None
  labels, class_names, names, data = _group_by_class(items, f'split {split!r} of archive {path}')
  return Examples(labels, class_names, names, encoded=data)


def _read_folder(path, split):
  root = os.path.join(path, split)
  if not os.path.isdir(root):
    raise FileNotFoundError(f'image folder not found: {root}')
  items = []
  for class_name in os.listdir(root):
    class_dir = os.path.join(root, class_name)
    if os.path.isdir(class_dir):
      items += [(class_name, os.path.join(class_dir, f), os.path.join(class_dir, f))
                for f in os.listdir(class_dir) if f.lower().endswith(IMAGE_EXTENSIONS)]
  labels, class_names, names, paths = _group_by_class(items, f'image folder {root}')
  return Examples(labels, class_names, names, paths=paths)


TFDS_DOWNLOAD_HOST = 'storage.googleapis.com'


def _reachable(host, port=443, timeout=5.0):
  try:
    socket.create_connection((host, port), timeout).close()
    return True
  except OSError:
    return False


def _read_tfds(name, split, data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      if not _reachable(TFDS_DOWNLOAD_HOST):
        raise ValueError(f'it is not prepared in {builder.data_dir} and {TFDS_DOWNLOAD_HOST} '
                         f'cannot be reached to download it: run `tfds build {name} --data_dir=DIR`'
                         f' where there is network, copy DIR here and set '
                         f'--config.data.tfds_data_dir=DIR')
      builder.download_and_prepare()
    ds = builder.as_dataset(split=split, as_supervised=True,
                            decoders={'image': tfds.decode.SkipDecoding()})
    items = list(tfds.as_numpy(ds))
  except Exception as e:  # tfds raises many types; the user needs the one line.
    raise ValueError(f'cannot load TFDS data set {name!r} split {split!r}: '
                     f'{str(e).splitlines()[0] if str(e) else type(e).__name__}') from None
  if not items:
    raise ValueError(f'TFDS data set {name!r} split {split!r} is empty')
  encoded, labels = zip(*items)
  return Examples(np.array(labels, np.int32), list(builder.info.features['label'].names),
                  [f'TFDS {name} {split} example {i}' for i in range(len(items))],
                  encoded=list(encoded))


def _decode(data, name):
  try:
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
  except (tf.errors.InvalidArgumentError, ValueError):
    raise ValueError(f'corrupt or unreadable image: {name}') from None
  return image.numpy()


def _read_bytes(path):
  with open(path, 'rb') as f:
    return f.read()


def _head_and_tail(path):
  with open(path, 'rb') as f:
    head = f.read(16)
    f.seek(max(os.fstat(f.fileno()).st_size - _TAIL_BYTES, 0))
    return head, f.read()


def _check_structure(head, tail, name):
  """Known magic bytes and, for JPEG and PNG, the end marker near the end of the file."""
  if head.startswith(b'\xff\xd8\xff'):
    ok = b'\xff\xd9' in tail
  elif head.startswith(b'\x89PNG\r\n\x1a\n'):
    ok = b'IEND' in tail
  else:
    ok = head.startswith((b'GIF87a', b'GIF89a', b'BM'))
  if not ok:
    raise ValueError(f'corrupt or unreadable image: {name}')


def _map_files(fn, paths):
  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    return list(pool.map(fn, paths))


def _decode_all(examples):
  """Decodes every image once; stacks them when they share a size, else keeps the bytes."""
  blobs = examples.encoded if examples.encoded is not None else _map_files(_read_bytes,
                                                                           examples.paths)
  images = [_decode(b, name) for b, name in zip(blobs, examples.names)]
  if len({im.shape for im in images}) != 1:
    return dataclasses.replace(examples, encoded=blobs, paths=None)
  return dataclasses.replace(examples, images=np.stack(images), encoded=None, paths=None)


def image_at(examples, index):
  """Image `index` of a split as uint8 [h, w, 3], decoded if it is not cached."""
  if examples.images is not None:
    return examples.images[index]
  data = (examples.encoded[index] if examples.encoded is not None
          else _read_bytes(examples.paths[index]))
  return _decode(data, examples.names[index])


def _check_all(examples):
  if examples.encoded is not None:
    parts = [(b[:16], b[-_TAIL_BYTES:]) for b in examples.encoded]
  else:
    parts = _map_files(_head_and_tail, examples.paths)
  for (head, tail), name in zip(parts, examples.names):
    _check_structure(head, tail, name)
  return examples


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
    examples = _read_tfds(data_config.tfds_name, split, data_config.get('tfds_data_dir') or None)
  else:
    raise ValueError(f'unknown data source {source!r}; known sources: '
                     f'{", ".join(sources.TF_SOURCES)}')
  return _decode_all(examples) if data_config.cache_decoded else _check_all(examples)


def _decoder(examples):
  """index (int64 scalar tensor) → float32 image [h, w, 3] in [0, 1], decoded on the fly."""
  if examples.encoded is not None:
    table = tf.constant(examples.encoded)
    read = lambda i: tf.gather(table, i)
  else:
    table = tf.constant(examples.paths)
    read = lambda i: tf.io.read_file(tf.gather(table, i))
  return lambda i: tf.cast(
      tf.io.decode_image(read(i), channels=3, expand_animations=False), tf.float32) / 255.0


def _gatherer(examples):
  """indices (int64 [m]) → float32 images [m, h, w, 3] in [0, 1] from the decoded cache."""
  table = tf.constant(examples.images)
  return lambda i: tf.cast(tf.gather(table, i), tf.float32) / 255.0


def _draws(seed, stream, first, count, per_example):
  """Uniform draws [count, per_example] of global examples first, …, first + count − 1.

  Example k owns Philox counter block k of the stream keyed by (seed, stream) (4 uint32 per
  counter step), so its draws are the same whichever batch or host computes them.
  """
  key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(
      seed=tf.constant([seed, stream], tf.int64))
  steps = -(-per_example // 4)
  offset = tf.cast(tf.cast(first, tf.int64) * steps, tf.uint64)
  counter = counter + tf.stack([offset, tf.constant(0, tf.uint64)])
  u = tf.raw_ops.StatelessRandomUniformV2(shape=[count * 4 * steps], key=key, counter=counter,
                                          alg=1)  # Philox
  return tf.reshape(u, [count, 4 * steps])[:, :per_example]


def shuffled_index(k, n, seed):
  """Images of global examples k (int64 [m]): a fresh permutation of the n images per epoch."""
  k = tf.convert_to_tensor(k, tf.int64)
  # [c, seed, epoch] with the constant c that tf.random.experimental.index_shuffle prepends to a
  # seed [seed, epoch]: the same permutations as that scalar API.
  seeds = tf.stack([tf.fill(tf.shape(k), tf.constant(498247692, tf.int64)),
                    tf.fill(tf.shape(k), tf.constant(seed, tf.int64)), k // n], axis=1)
  return tf.raw_ops.RandomIndexShuffle(index=k % n, seed=seeds,
                                       max_index=tf.constant(n - 1, tf.int64), rounds=4)


def _host_batches(start_step, global_batch, process_index, process_count, local_devices):
  """Global position of the first example of this host's slice of every global batch, from
  `start_step` on, and the per-host batch size."""
  if global_batch % process_count:
    raise ValueError(f'global batch {global_batch} is not divisible by the {process_count} hosts')
  per_host = global_batch // process_count
  if per_host % local_devices:
    raise ValueError(f'per-host batch {per_host} (global batch {global_batch} over '
                     f'{process_count} hosts) is not divisible by the {local_devices} local '
                     'devices')
  offset = process_index * per_host
  return tf.data.Dataset.counter(start_step).map(lambda s: s * global_batch + offset), per_host


def pretrain_dataset(examples, config, start_step=0, process_index=0, process_count=1,
                     local_devices=None):
  """Infinite stream of this host's batches {'view1', 'view2'}, float32 [b, s, s, 3] each."""
  if local_devices is None:
    import jax  # pylint: disable=g-import-not-at-top
    local_devices = jax.local_device_count()
  firsts, per_host = _host_batches(start_step, config.batch_size, process_index, process_count,
                                   local_devices)
  data, seed, n, size = config.data, config.seed, len(examples), config.data.image_size
  parallel = dict(num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  settings = augment.recipe(config.get('augment'))
  scale = settings['crop_scale']

  def draws(first, count):
    u = _draws(seed, PRETRAIN_STREAM, first, count, 2 * augment.VIEW_DRAWS)
    return tf.reshape(u, [count, 2, augment.VIEW_DRAWS])

  def views(first, crops):  # crops [2b, 3, s, s]: both views of each image in turn
    view1, view2 = augment.pretrain_views(crops, draws(first, per_host), data.normalization,
                                          settings)
    return {'view1': view1, 'view2': view2}

  if examples.images is not None:
    gather = _gatherer(examples)

    def batch(first):
      images = gather(shuffled_index(first + tf.range(per_host, dtype=tf.int64), n, seed))
      u = tf.reshape(draws(first, per_host), [2 * per_host, augment.VIEW_DRAWS])
      return views(first, augment.random_resized_crop(tf.repeat(images, 2, axis=0), u, size,
                                                      scale))

    return firsts.map(batch, **parallel).prefetch(tf.data.AUTOTUNE)

  decode = _decoder(examples)

  def crops(k):
    image = decode(shuffled_index(k[None], n, seed)[0])
    return tf.ensure_shape(augment.random_resized_crop(image, draws(k, 1)[0], size, scale),
                           [2, 3, size, size])

  ds = firsts.flat_map(lambda first: tf.data.Dataset.range(first, first + per_host))
  ds = ds.map(crops, **parallel).batch(per_host, drop_remainder=True)
  ds = tf.data.Dataset.zip(firsts, ds).map(
      lambda first, c: views(first, tf.reshape(c, [2 * per_host, 3, size, size])), **parallel)
  return ds.prefetch(tf.data.AUTOTUNE)


def probe_dataset(examples, data_config, batch_size, train, seed=0, epoch=0):
  """One pass over a split, in order for test, shuffled per epoch for train; the last batch is
  padded to `batch_size` and carries a 'mask' so every example is seen exactly once.

  Train: random resized crop + flip (App. B.1.2), draws from global position epoch·n + k.
  Test: resize the short side to size·8/7 (bicubic), centre crop.
  """
  n, size = len(examples), data_config.image_size
  labels = tf.constant(examples.labels)
  num_batches = -(-n // batch_size)
  parallel = dict(num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def locate(k):  # positions k (int64 [m]) → image indices, mask
    valid = k < n
    k = tf.minimum(k, n - 1)
    return (shuffled_index(epoch * n + k, n, seed) if train else k), valid

  def view(images, first, count):  # a batch [count, h, w, 3] or one image [h, w, 3]
    if train:
      u = _draws(seed, PROBE_STREAM, epoch * n + first, count, augment.CROP_DRAWS)
      return augment.random_resized_crop(images, u, size)
    return augment.center_view(images, size)

  def finish(views, index, valid):
    return {'image': augment.normalize(views, data_config.normalization),
            'label': tf.gather(labels, index), 'mask': valid}

  if examples.images is not None:
    gather = _gatherer(examples)

    def batch(b):
      k = b * batch_size + tf.range(batch_size, dtype=tf.int64)
      index, valid = locate(k)
      return finish(view(gather(index), k[0], batch_size), index, valid)

    return tf.data.Dataset.range(num_batches).map(batch, **parallel).prefetch(tf.data.AUTOTUNE)

  decode = _decoder(examples)

  def one(k):
    index, valid = locate(k[None])
    crop = tf.ensure_shape(view(decode(index[0]), k, 1), [1, 3, size, size])
    return crop[0], index[0], valid[0]

  ds = tf.data.Dataset.range(num_batches * batch_size).map(one, **parallel).batch(batch_size)
  return ds.map(finish, **parallel).prefetch(tf.data.AUTOTUNE)
