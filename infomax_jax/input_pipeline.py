"""Data sources and tf.data pipelines.

Sources (config.data.source):
  sample   the class-balanced CIFAR-10 sample shipped in infomax_jax/data (see its README)
  archive  a tar laid out as <root>/<split>/<class>/<image>, like the shared CIFAR-10 one; a
           compressed one (.tar.gz, .tar.bz2, .tar.xz) is decompressed once into
           config.data.cache_dir
  folder   an image-folder tree <path>/<split>/<class>/<image>, on a local disk or gs://
  tfds     a TensorFlow Datasets name (config.data.tfds_name), e.g. cifar10, imagenet2012;
           streaming needs the ArrayRecord format (docs/data.md, "Preparing ImageNet")

Every split is a fixed index (labels, names, and where each image's bytes are: file paths,
archive offsets or record numbers) over images read by random access, so a host holds the
index, the batches in flight and, only when config.data.cache_decoded decides so, the decoded
split:
  'auto'    decode the split once into memory when it fits config.data.cache_budget_gb (per
            host, estimated from a few images) and all images share one size; stream otherwise
  'always'  decode the split once (a split of mixed sizes streams)
  'never'   stream: every image is read and decoded when a batch needs it
A cached split is augmented a whole batch at a time. A streamed split gets a structural check
(magic bytes, JPEG/PNG end marker) of config.data.check_files of its files at load time (evenly
spaced; -1 checks every file, in parallel); every image is checked again when it is read, and a
corrupt one stops the run with a one-line error that names it (`batches`).

The pretraining stream is index-based: global example k of the run is image
index_shuffle(k mod n, [seed, epoch = k div n]) and its random draws are block k of a Philox
stream keyed by the seed (`_draws`), so they depend on (seed, k) alone. A batch is therefore a
pure function of (seed, step): each host reads its own contiguous slice of every global batch,
and a restart at step s continues exactly the stream an uninterrupted run would have seen.
"""
import bz2
import concurrent.futures
import dataclasses
import gzip
import hashlib
import lzma
import os
import re
import shutil
import socket
import tarfile
import threading
from typing import Optional

from absl import logging
import ml_collections
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
_UNREADABLE = 'IMAGE_UNREADABLE'   # marks the in-graph check's error, which carries the name
_COMPRESSIONS = ((b'\x1f\x8b', 'gzip', gzip.open), (b'BZh', 'bzip2', bz2.open),
                 (b'\xfd7zXZ\x00', 'xz', lzma.open))


class Reader:
  """Random access to one split: labels (int32 [n]) and names in memory, the images' encoded
  bytes wherever they are. `read(i)` gives the bytes in Python, `tf_read(index)` the (bytes,
  label, name) tensors inside a tf.data graph."""

  def __len__(self):
    return len(self.labels)

  def name(self, i):
    raise NotImplementedError

  def read(self, i):
    raise NotImplementedError

  def read_labelled(self, i):
    """(encoded bytes, int32 label) of example i."""
    return self.read(i), np.int32(self.labels[i])

  def tf_read(self, index):
    data, label = tf.numpy_function(lambda i: self.read_labelled(int(i)), [index],
                                    (tf.string, tf.int32), stateful=False)
    return tf.ensure_shape(data, []), tf.ensure_shape(label, []), self.tf_name(index)

  def tf_name(self, index):
    return tf.numpy_function(lambda i: self.name(int(i)).encode(), [index], tf.string,
                             stateful=False)

  def some_labels(self, count=1000):
    """Labels of up to `count` evenly spaced examples (all of them when they are in memory)."""
    del count
    return self.labels


class DecodedOnly(Reader):
  """The index of a split that exists only decoded in memory (a TFRecord-prepared TFDS split)."""

  def __init__(self, labels, name):
    self.labels, self._name = labels, name

  def name(self, i):
    return f'{self._name} example {i}'


class FolderReader(Reader):
  """Image files <root>/<relative path>, read with tf.io (a local disk or gs://)."""

  def __init__(self, root, relative_paths, labels):
    self.root, self.labels = root.rstrip('/') + '/', labels
    self.relative_paths = np.array(relative_paths, dtype=bytes)   # one fixed-width array
    self._tensors = None

  def _index_tensors(self):
    if self._tensors is None:   # made once, captured by the tf.data graphs, not embedded
      with tf.init_scope():
        self._tensors = tf.constant(self.relative_paths), tf.constant(self.labels)
    return self._tensors

  def name(self, i):
    return self.root + self.relative_paths[i].decode()

  def read(self, i):
    with tf.io.gfile.GFile(self.name(i), 'rb') as f:
      return f.read()

  def tf_read(self, index):
    path = self.tf_name(index)
    return tf.io.read_file(path), tf.gather(self._index_tensors()[1], index), path

  def tf_name(self, index):
    return tf.strings.join([self.root, tf.gather(self._index_tensors()[0], index)])


class TarReader(Reader):
  """Members of an uncompressed tar, read by offset (`os.pread` on a local disk, a seek on
  gs://); `archive` is the name the user gave (errors name its members)."""

  def __init__(self, archive, tar_path, offsets, sizes, members, labels):
    self.archive, self.tar_path, self.labels = archive, tar_path, labels
    self.offsets, self.sizes = np.asarray(offsets, np.int64), np.asarray(sizes, np.int64)
    self.members = np.array(members, dtype=bytes)
    self._lock, self._fd, self._members = threading.Lock(), None, None

  def name(self, i):
    return f'{self.archive}:{self.members[i].decode()}'

  def read(self, i):
    offset, size = int(self.offsets[i]), int(self.sizes[i])
    if '://' in self.tar_path:
      with tf.io.gfile.GFile(self.tar_path, 'rb') as f:
        f.seek(offset)
        return f.read(size)
    with self._lock:
      if self._fd is None:
        self._fd = os.open(self.tar_path, os.O_RDONLY)
    return os.pread(self._fd, size, offset)   # one descriptor: pread is safe across threads

  def __del__(self):
    if getattr(self, '_fd', None) is not None:
      os.close(self._fd)

  def tf_name(self, index):
    if self._members is None:   # made once, captured by the tf.data graphs, not embedded
      with tf.init_scope():
        self._members = tf.constant(self.members)
    return tf.strings.join([self.archive + ':', tf.gather(self._members, index)])


class TfdsReader(Reader):
  """Records of a TFDS split prepared in a random-access format (ArrayRecord), through
  `tfds.data_source`; the labels are in the records, so `labels` reads every record once."""

  def __init__(self, source, title):
    self.source, self.title, self._labels = source, title, None

  def __len__(self):
    return len(self.source)

  @property
  def labels(self):
    """Every record's label (read once, in parallel, when first asked for)."""
    if self._labels is None:
      logging.info('reading the labels of the %d records of %s', len(self), self.title)
      with concurrent.futures.ThreadPoolExecutor(16) as pool:
        self._labels = np.array(list(pool.map(lambda i: self.source[i]['label'],
                                              range(len(self)))), np.int32)
    return self._labels

  @labels.setter
  def labels(self, labels):
    self._labels = labels

  def some_labels(self, count=1000):
    if self._labels is not None:
      return self._labels
    picks = np.linspace(0, len(self) - 1, min(count, len(self))).astype(np.int64)
    return np.array([self.source[int(i)]['label'] for i in picks], np.int32)

  def name(self, i):
    return f'{self.title} example {i}'

  def read(self, i):
    return self.source[i]['image']

  def read_labelled(self, i):   # one record read: the label is in it
    record = self.source[i]
    return record['image'], np.int32(record['label'])

  def tf_name(self, index):
    return tf.strings.join([self.title + ' example ', tf.strings.as_string(index)])


class SubsetReader(Reader):
  """The examples of `base` at `indices` (repeats allowed)."""

  def __init__(self, base, indices):
    self.base, self.indices = base, np.asarray(indices, np.int64)

  def __len__(self):
    return len(self.indices)

  @property
  def labels(self):
    return self.base.labels[self.indices]

  def name(self, i):
    return self.base.name(self.indices[i])

  def read(self, i):
    return self.base.read(self.indices[i])

  def tf_read(self, index):
    return self.base.tf_read(tf.gather(self.indices, index))

  def tf_name(self, index):
    return self.base.tf_name(tf.gather(self.indices, index))


class _Names:
  """The names of a split's examples as a read-only sequence, made on demand."""

  def __init__(self, reader):
    self.reader = reader

  def __len__(self):
    return len(self.reader)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self.reader.name(k) for k in range(len(self.reader))[i]]
    return self.reader.name(i)

  def __iter__(self):
    return (self.reader.name(i) for i in range(len(self.reader)))


@dataclasses.dataclass
class Examples:
  """One split: its classes, its index (`reader`) and, when cached, the decoded images."""
  class_names: list
  reader: Reader
  images: Optional[np.ndarray] = None    # uint8 [n, h, w, 3], all the same size

  def __len__(self):
    return len(self.reader)

  @property
  def labels(self):
    return self.reader.labels

  @property
  def names(self):
    return _Names(self.reader)

  def subset(self, indices):
    """The examples at `indices` (repeats allowed)."""
    return Examples(self.class_names, SubsetReader(self.reader, indices),
                    None if self.images is None else self.images[np.asarray(indices)])


def _group_by_class(items, what):
  """items (class name, key, payload) → (labels, class names, items), sorted by class, key."""
  if not items:
    raise ValueError(f'no images found in {what}')
  class_names = sorted({c for c, _, _ in items})
  index = {c: i for i, c in enumerate(class_names)}
  items = sorted(items, key=lambda item: (index[item[0]], item[1]))
  return np.array([index[c] for c, _, _ in items], np.int32), class_names, items


def _exists(path):
  return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)


def _uncompressed(path, cache_dir):
  """`path` if it is an uncompressed tar, else its decompressed copy in `cache_dir` (made once:
  a copy named after the archive's path, size and modification time)."""
  with tf.io.gfile.GFile(path, 'rb') as f:
    head = f.read(6)
  for magic, kind, opener in _COMPRESSIONS:
    if head.startswith(magic):
      break
  else:
    return path
  if not cache_dir:
    raise ValueError(f'data archive {path} is {kind}-compressed and config.data.cache_dir is '
                     'empty: decompress it once (e.g. `gunzip -k`) and point '
                     '--config.data.path at the .tar, or set --config.data.cache_dir=DIR')
  stat = tf.io.gfile.stat(path)
  key = hashlib.sha256(f'{path}|{stat.length}|{stat.mtime_nsec}'.encode()).hexdigest()[:12]
  stem = os.path.basename(path).split('.tar')[0]
  cached = os.path.join(os.path.expanduser(cache_dir), f'{stem}-{key}.tar')
  if not os.path.exists(cached):
    logging.info('decompressing %s once into %s', path, cached)
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    partial = f'{cached}.{os.getpid()}.partial'
    with tf.io.gfile.GFile(path, 'rb') as raw, opener(raw) as source, open(partial, 'wb') as out:
      shutil.copyfileobj(source, out, 1 << 20)
    os.replace(partial, cached)   # atomic: concurrent loaders (hosts of one machine) agree
  return cached


def _read_archive(path, split, cache_dir):
  if not _exists(path):
    raise FileNotFoundError(f'data archive not found: {path}')
  items = []
  try:
    tar_path = _uncompressed(path, cache_dir)
    with tf.io.gfile.GFile(tar_path, 'rb') as f, tarfile.open(fileobj=f, mode='r:') as archive:
      while (member := archive.next()) is not None:
        archive.members.clear()   # tarfile keeps every header otherwise
        parts = member.name.split('/')
        if (member.isfile() and len(parts) >= 3 and parts[-3] == split
            and parts[-1].lower().endswith(IMAGE_EXTENSIONS)):
          items.append((parts[-2], member.name, (member.offset_data, member.size)))
  except (tarfile.TarError, OSError, EOFError) as e:
    reason = '; '.join(line.strip(' -:') for line in str(e).splitlines() if line.strip())
    raise ValueError(f'cannot read data archive {path}: {reason}') from None
  labels, class_names, items = _group_by_class(items, f'split {split!r} of archive {path}')
  offsets, sizes = zip(*(where for _, _, where in items))
  return TarReader(path, tar_path, offsets, sizes, [m for _, m, _ in items], labels), class_names


def _read_folder(path, split):
  root = path.rstrip('/') + '/' + split
  if not tf.io.gfile.isdir(root):
    raise FileNotFoundError(f'image folder not found: {root}')
  classes = [c.rstrip('/') for c in tf.io.gfile.listdir(root)]

  def listing(class_name):
    directory = f'{root}/{class_name}'
    if not tf.io.gfile.isdir(directory):
      return []
    return [(class_name, f'{class_name}/{f}', None) for f in tf.io.gfile.listdir(directory)
            if f.lower().endswith(IMAGE_EXTENSIONS)]

  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    items = [item for found in pool.map(listing, classes) for item in found]
  labels, class_names, items = _group_by_class(items, f'image folder {root}')
  return FolderReader(root, [relative for _, relative, _ in items], labels), class_names


TFDS_DOWNLOAD_HOST = 'storage.googleapis.com'


def _reachable(host, port=443, timeout=5.0):
  try:
    socket.create_connection((host, port), timeout).close()
    return True
  except OSError:
    return False


def _tfds_error(name, split, reason):
  return ValueError(f'cannot load TFDS data set {name!r} split {split!r}: {reason}')


def _read_tfds(data_config, split):
  """(reader, class names, decoded images or None) of a TFDS split: ArrayRecord streams; a
  TFRecord-only split is decoded into memory when config.data.cache_decoded allows and it fits,
  else it is a one-line error that says how to prepare it for random access."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name, data_dir = data_config.tfds_name, data_config.get('tfds_data_dir') or None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      if not _reachable(TFDS_DOWNLOAD_HOST):
        raise ValueError(f'it is not prepared in {builder.data_dir} and {TFDS_DOWNLOAD_HOST} '
                         f'cannot be reached to download it: run `tfds build {name} '
                         '--file_format=array_record --data_dir=DIR` where there is network, '
                         'copy DIR here and set --config.data.tfds_data_dir=DIR')
      tfds.builder(name, data_dir=data_dir, file_format='array_record').download_and_prepare()
      builder = tfds.builder(name, data_dir=data_dir)
    class_names = list(builder.info.features['label'].names)
    title = f'TFDS {name} {split}'
    skip = {'image': tfds.decode.SkipDecoding()}
    try:
      source = builder.as_data_source(split=split, decoders=skip)
      return TfdsReader(source, title), class_names, None
    except NotImplementedError:   # prepared in a format without random access (TFRecord)
      dataset = builder.as_dataset(split=split, decoders=skip).map(
          lambda example: (example['image'], example['label']))
  except ValueError as e:
    raise _tfds_error(name, split, str(e).splitlines()[0]) from None
  except Exception as e:  # tfds raises many types; the user needs the one line.
    raise _tfds_error(name, split,
                      str(e).splitlines()[0] if str(e) else type(e).__name__) from None
  size = builder.info.splits[split].num_examples
  if data_config.cache_decoded == 'never' or not _fits(_decoded_shapes(
      (data, f'{title} example {i}') for i, (data, _) in enumerate(dataset.take(8))),
      size, data_config):
    raise _tfds_error(name, split, f'it is prepared as {builder.info.file_format.value} in '
                      f'{builder.data_dir}, which streams only as ArrayRecord, and does not fit '
                      'the decoded cache (config.data.cache_budget_gb): convert it with `tfds '
                      f'convert_format --dataset_version_dir={builder.data_dir} '
                      '--out_file_format=array_record` (docs/data.md)')
  index = DecodedOnly(np.zeros(size, np.int32), title)
  images, labels = _decode_all(index, dataset.enumerate().map(
      lambda i, example: (example[0], example[1], index.tf_name(i))))
  if images is None:
    raise _tfds_error(name, split, f'its images differ in size and it is prepared as '
                      f'{builder.info.file_format.value}, which streams only as ArrayRecord: '
                      f'convert it with `tfds convert_format --dataset_version_dir='
                      f'{builder.data_dir} --out_file_format=array_record` (docs/data.md)')
  index.labels = labels
  return index, class_names, images


def _decode(data, name):
  try:
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
  except (tf.errors.InvalidArgumentError, ValueError):
    raise ValueError(f'corrupt or unreadable image: {name}') from None
  return image.numpy()


def image_at(examples, index):
  """Image `index` of a split as uint8 [h, w, 3], decoded if it is not cached."""
  if examples.images is not None:
    return examples.images[index]
  return _decode(examples.reader.read(index), examples.names[index])


def _structure_ok(data):
  """Known magic bytes and, for JPEG and PNG, the end marker near the end (in-graph)."""
  head = lambda n: tf.strings.substr(data, 0, n)
  length = tf.strings.length(data)
  tail = tf.io.decode_raw(tf.strings.substr(data, tf.maximum(length - _TAIL_BYTES, 0),
                                            _TAIL_BYTES), tf.uint8)

  def contains(marker):
    windows = [tail[i:tf.size(tail) - len(marker) + 1 + i] == byte
               for i, byte in enumerate(marker)]
    return tf.reduce_any(tf.reduce_all(tf.stack(windows), axis=0))

  is_jpeg, is_png = head(3) == b'\xff\xd8\xff', head(8) == b'\x89PNG\r\n\x1a\n'
  other = (head(6) == b'GIF87a') | (head(6) == b'GIF89a') | (head(2) == b'BM')
  return tf.cond(is_jpeg, lambda: contains(b'\xff\xd9'),
                 lambda: tf.cond(is_png, lambda: contains(b'IEND'), lambda: other))


def _checked(data, name):
  """`data` after the structural check, which stops the stream naming the image."""
  check = tf.debugging.Assert(_structure_ok(data), [_UNREADABLE, name], summarize=1)
  with tf.control_dependencies([check]):
    return tf.identity(data)


def _decode_tensor(data, name):
  """uint8 [h, w, 3] of checked encoded bytes."""
  return tf.io.decode_image(_checked(data, name), channels=3, expand_animations=False)


def batches(dataset):
  """The NumPy batches of a pipeline's dataset; a corrupt image is a one-line ValueError that
  names it."""
  try:
    yield from dataset.as_numpy_iterator()
  except GeneratorExit:   # a consumer that stops early; also at exit, when `tf` may be gone
    raise
  except tf.errors.OpError as e:   # decoding, a missing file, a failed read
    found = re.search(rf'\[{_UNREADABLE}\] \[(.*)\]', e.message)
    if found:
      raise ValueError(f'corrupt or unreadable image: {found[1]}') from None
    reason = e.message.split('transformation with iterator: ')[-1].strip().splitlines()[0]
    raise ValueError(f'cannot read or decode an image: {reason}') from None


def _decoded_shapes(encoded):
  """(h, w) of each image of `encoded`, pairs (bytes, name); a corrupt one is named."""
  shapes = []
  for data, name in encoded:
    try:
      shape = (tf.io.extract_jpeg_shape(data).numpy() if tf.io.is_jpeg(data)
               else _decode(data, name).shape)
      shapes.append((int(shape[0]), int(shape[1])))   # Python ints: n·h·w·3 must not wrap
    except tf.errors.InvalidArgumentError:
      raise ValueError(f'corrupt or unreadable image: {name}') from None
  return shapes


def _fits(shapes, size, data_config):
  """Whether `size` images like `shapes` (h, w[, c]) share one size and fit the cache budget."""
  if not shapes or len(set(shapes)) != 1:
    return False
  h, w = shapes[0]
  return size * h * w * 3 <= data_config.cache_budget_gb * 2**30


def _decode_all(reader, encoded, batch_size=1024):
  """(uint8 [n, h, w, 3], labels) from a dataset of (bytes, label, name), decoded in parallel
  into one array, `batch_size` images per copy; None for the images if they do not share one
  size."""
  if not len(reader):
    return None, None
  first = next(batches(encoded.take(1).map(lambda data, _, name: tf.shape(
      _decode_tensor(data, name)))))

  def decode(data, label, name):   # an image of another size: zeros and same = False
    image = _decode_tensor(data, name)
    same = tf.reduce_all(tf.shape(image) == first)
    image = tf.cond(same, lambda: tf.reshape(image, first), lambda: tf.zeros(first, tf.uint8))
    return image, label, same

  images = np.empty((len(reader), *first), np.uint8)
  labels = np.zeros(len(reader), np.int32)
  position = 0
  ds = encoded.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  for image, label, same in batches(ds.batch(batch_size).prefetch(1)):
    if not same.all():
      return None, None
    images[position:position + len(image)], labels[position:position + len(image)] = image, label
    position += len(image)
  return images, labels


def _cache_decision(reader, data_config):
  """Whether to decode the split into memory (config.data.cache_decoded)."""
  if data_config.cache_decoded == 'never':
    return False
  if data_config.cache_decoded == 'always':
    return True
  picks = np.linspace(0, len(reader) - 1, min(8, len(reader))).astype(np.int64)
  shapes = _decoded_shapes((reader.read(int(i)), reader.name(int(i))) for i in picks)
  return _fits(shapes, len(reader), data_config)


def _check_files(reader, count):
  """The structural check of `count` evenly spaced files (all of them if count is -1)."""
  n = len(reader)
  count = n if count < 0 else min(count, n)
  if count == 0:
    return
  picks = np.linspace(0, n - 1, count).round().astype(np.int64)

  def check(i):
    data, _, name = reader.tf_read(i)
    return tf.strings.length(_checked(data, name))

  ds = tf.data.Dataset.from_tensor_slices(picks).map(check, num_parallel_calls=tf.data.AUTOTUNE,
                                                     deterministic=False)
  for _ in batches(ds.batch(256)):
    pass
  logging.info('structural check of %d of %d files passed (config.data.check_files); every file '
               'is checked again when it is read', count, n)


def load_split(data_config, split):
  """Reads one split of the configured source. Errors are one line and name the culprit."""
  source = data_config.source
  cache_decoded = data_config.cache_decoded
  if isinstance(cache_decoded, bool):   # the workdir config of an earlier version
    cache_decoded = 'always' if cache_decoded else 'never'
  if cache_decoded not in sources.CACHE_DECODED:
    raise ValueError('config.data.cache_decoded must be one of '
                     f'{", ".join(sources.CACHE_DECODED)}, not {cache_decoded!r}')
  data_config = ml_collections.ConfigDict({**sources.STREAMING_DEFAULTS, **data_config,
                                           'cache_decoded': cache_decoded})
  cache_dir = data_config.cache_dir
  images = None
  if source == 'sample':
    reader, class_names = _read_archive(SAMPLE_ARCHIVE, split, cache_dir)
  elif source == 'archive':
    reader, class_names = _read_archive(data_config.path, split, cache_dir)
  elif source == 'folder':
    reader, class_names = _read_folder(data_config.path, split)
  elif source == 'tfds':
    reader, class_names, images = _read_tfds(data_config, split)
  else:
    raise ValueError(f'unknown data source {source!r}; known sources: '
                     f'{", ".join(sources.TF_SOURCES)}')
  if images is None and _cache_decision(reader, data_config):
    indices = tf.data.Dataset.range(len(reader))
    images, labels = _decode_all(reader, indices.map(reader.tf_read,
                                                     num_parallel_calls=tf.data.AUTOTUNE))
    if isinstance(reader, TfdsReader) and images is not None:
      reader.labels = labels   # read with the images: no second pass over the records
  if images is None:
    _check_files(reader, data_config.check_files)
  return Examples(class_names, reader, images)


def _decoder(examples):
  """index (int64 scalar tensor) → (float32 image [h, w, 3] in [0, 1], label), read and decoded
  on the fly."""
  def decode(index):
    data, label, name = examples.reader.tf_read(index)
    return tf.cast(_decode_tensor(data, name), tf.float32) / 255.0, label

  return decode


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
                     local_devices=None, labels=False):
  """Infinite stream of this host's batches {'view1', 'view2'}, float32 [b, s, s, 3] each, and
  with `labels` the images' 'label' int32 [b] (the views do not depend on it)."""
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

  def views(first, crops, label):  # crops [2b, 3, s, s]: both views of each image in turn
    view1, view2 = augment.pretrain_views(crops, draws(first, per_host), data.normalization,
                                          settings)
    return dict(view1=view1, view2=view2, **({'label': label} if labels else {}))

  if examples.images is not None:
    gather, all_labels = _gatherer(examples), tf.constant(examples.labels)

    def batch(first):
      index = shuffled_index(first + tf.range(per_host, dtype=tf.int64), n, seed)
      u = tf.reshape(draws(first, per_host), [2 * per_host, augment.VIEW_DRAWS])
      return views(first, augment.random_resized_crop(tf.repeat(gather(index), 2, axis=0), u,
                                                      size, scale),
                   tf.gather(all_labels, index))

    return firsts.map(batch, **parallel).prefetch(tf.data.AUTOTUNE)

  decode = _decoder(examples)

  def crops(k):
    image, label = decode(shuffled_index(k[None], n, seed)[0])
    return tf.ensure_shape(augment.random_resized_crop(image, draws(k, 1)[0], size, scale),
                           [2, 3, size, size]), label

  ds = firsts.flat_map(lambda first: tf.data.Dataset.range(first, first + per_host))
  ds = ds.map(crops, **parallel).batch(per_host, drop_remainder=True)
  ds = tf.data.Dataset.zip(firsts, ds).map(
      lambda first, c: views(first, tf.reshape(c[0], [2 * per_host, 3, size, size]), c[1]),
      **parallel)
  return ds.prefetch(tf.data.AUTOTUNE)


def probe_dataset(examples, data_config, batch_size, train, seed=0, epoch=0):
  """One pass over a split, in order for test, shuffled per epoch for train; the last batch is
  padded to `batch_size` and carries a 'mask' so every example is seen exactly once.

  Train: random resized crop + flip (App. B.1.2), draws from global position epoch·n + k.
  Test: resize the short side to size·8/7 (bicubic), centre crop.
  """
  n, size = len(examples), data_config.image_size
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

  def finish(views, label, valid):
    return {'image': augment.normalize(views, data_config.normalization), 'label': label,
            'mask': valid}

  if examples.images is not None:
    gather, labels = _gatherer(examples), tf.constant(examples.labels)

    def batch(b):
      k = b * batch_size + tf.range(batch_size, dtype=tf.int64)
      index, valid = locate(k)
      return finish(view(gather(index), k[0], batch_size), tf.gather(labels, index), valid)

    return tf.data.Dataset.range(num_batches).map(batch, **parallel).prefetch(tf.data.AUTOTUNE)

  decode = _decoder(examples)

  def one(k):
    index, valid = locate(k[None])
    image, label = decode(index[0])
    crop = tf.ensure_shape(view(image, k, 1), [1, 3, size, size])
    return crop[0], label, valid[0]

  ds = tf.data.Dataset.range(num_batches * batch_size).map(one, **parallel).batch(batch_size)
  return ds.map(finish, **parallel).prefetch(tf.data.AUTOTUNE)
