"""Sources, errors, determinism, resume and multi-host sharding of the tf.data pipelines."""
import io
import math
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from infomax_jax import augment
from infomax_jax import augment_config
from infomax_jax import input_pipeline
from infomax_jax import sources
from tests.tiny import tiny_config

CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                   'truck']


@pytest.fixture(scope='module')
def sample_test():
  return input_pipeline.load_split(tiny_config().data, 'test')


def _batches(examples, config, steps, start=0, **kwargs):
  ds = input_pipeline.pretrain_dataset(examples, config, start, local_devices=1, **kwargs)
  return list(ds.take(steps).as_numpy_iterator())


def _folder(root, count=24, extra=None):
  """An image-folder tree <root>/test/<class>/<file> with the first `count` sample test images."""
  with tarfile.open(input_pipeline.SAMPLE_ARCHIVE) as archive:
    members = [m for m in archive if m.isfile() and '/test/' in m.name][:count]
    for member in members:
      directory = os.path.join(root, 'test', member.name.split('/')[-2])
      os.makedirs(directory, exist_ok=True)
      with open(os.path.join(directory, os.path.basename(member.name)), 'wb') as f:
        f.write(archive.extractfile(member).read())
  for name, data in (extra or {}).items():
    os.makedirs(os.path.dirname(os.path.join(root, 'test', name)), exist_ok=True)
    with open(os.path.join(root, 'test', name), 'wb') as f:
      f.write(data)
  return str(root)


def _jpeg(size=(20, 12)):
  buffer = io.BytesIO()
  Image.fromarray(np.random.default_rng(0).integers(0, 256, size[::-1] + (3,), np.uint8)).save(
      buffer, 'JPEG')
  return buffer.getvalue()


def test_sample_and_archive_sources_agree(sample_test):
  config = tiny_config()
  config.data.source, config.data.path = 'archive', input_pipeline.SAMPLE_ARCHIVE
  archive = input_pipeline.load_split(config.data, 'test')
  assert sample_test.class_names == CIFAR10_CLASSES and len(sample_test) == 2000
  assert sample_test.images.shape == (2000, 32, 32, 3) and sample_test.images.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(sample_test.labels), [200] * 10)
  np.testing.assert_array_equal(archive.images, sample_test.images)
  np.testing.assert_array_equal(archive.labels, sample_test.labels)


def test_folder_source_cached_equals_on_the_fly(tmp_path):
  config = tiny_config(**{'data.source': 'folder', 'data.path': _folder(tmp_path)})
  cached = input_pipeline.load_split(config.data, 'test')
  config.data.cache_decoded = 'never'
  on_the_fly = input_pipeline.load_split(config.data, 'test')
  assert cached.images is not None and on_the_fly.images is None
  assert on_the_fly.names[0].startswith(str(tmp_path))
  np.testing.assert_array_equal(cached.labels, on_the_fly.labels)
  for a, b in zip(_batches(cached, config, 2), _batches(on_the_fly, config, 2)):
    for key in ('view1', 'view2'):
      np.testing.assert_allclose(a[key], b[key], atol=1e-5)
  for train in (False, True):
    a, b = (next(input_pipeline.probe_dataset(e, config.data, 16, train).as_numpy_iterator())
            for e in (cached, on_the_fly))
    np.testing.assert_allclose(a['image'], b['image'], atol=1e-5)


@pytest.mark.parametrize('cache', ['auto', 'always'])   # 'always': found while decoding
def test_folder_of_mixed_sizes_decodes_on_the_fly(tmp_path, cache):
  config = tiny_config(**{'data.source': 'folder', 'data.cache_decoded': cache,
                          'data.path': _folder(tmp_path, 8, {'cat/big.jpg': _jpeg((50, 40))})})
  examples = input_pipeline.load_split(config.data, 'test')
  assert examples.images is None and len(examples) == 9
  batch = _batches(examples, config, 1)[0]
  assert batch['view1'].shape == (16, 16, 16, 3)
  probe = next(input_pipeline.probe_dataset(examples, config.data, 16, False).as_numpy_iterator())
  assert probe['image'].shape == (16, 16, 16, 3) and probe['mask'].sum() == 9


def test_tfds_source_with_mock_data(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(input_pipeline, '_reachable', lambda host: True)   # mock_data "downloads"
  config = tiny_config(**{'data.source': 'tfds', 'data.tfds_name': 'cifar10',
                          'data.tfds_data_dir': str(tmp_path)})
  with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
    examples = input_pipeline.load_split(config.data, 'train')
  assert len(examples) == 24 and examples.images.shape == (24, 32, 32, 3)
  assert len(examples.class_names) == 10 and examples.labels.max() < 10
  batch = _batches(examples, config, 1)[0]
  assert batch['view1'].shape == (16, 16, 16, 3) and batch['view1'].dtype == np.float32


@pytest.mark.parametrize('cache', ['always', 'never'])
@pytest.mark.parametrize('corruption', ['truncated', 'garbage'])
def test_corrupt_jpeg_in_folder_names_the_file(tmp_path, cache, corruption):
  data = _jpeg()[:200] if corruption == 'truncated' else b'<html>not found</html>'
  root = _folder(tmp_path, 8, {'dog/broken.jpg': data})
  config = tiny_config(**{'data.source': 'folder', 'data.path': root, 'data.cache_decoded': cache})
  with pytest.raises(ValueError) as error:
    input_pipeline.load_split(config.data, 'test')
  assert str(error.value) == (
      f'corrupt or unreadable image: {os.path.join(root, "test", "dog", "broken.jpg")}')


def test_stream_left_open_at_exit_prints_nothing(tmp_path):
  """A consumer that stops early and exits without closing the stream (a benchmark's `break`):
  the generator's finalizer ran after TensorFlow's module was torn down and printed an
  AttributeError traceback."""
  script = tmp_path / 'stop_early.py'
  script.write_text(
      'from infomax_jax import input_pipeline\n'
      'from tests.tiny import tiny_config\n'
      'config = tiny_config()\n'
      'examples = input_pipeline.load_split(config.data, "test")\n'
      'dataset = input_pipeline.pretrain_dataset(examples, config, local_devices=1)\n'
      'stream = input_pipeline.batches(dataset)\n'
      'print(next(stream)["view1"].shape)\n')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=root,
                        env={**os.environ, 'PYTHONPATH': root}, timeout=300, check=True)
  assert done.stdout.strip().endswith('(16, 16, 16, 3)')
  assert 'Traceback' not in done.stderr and 'Exception ignored' not in done.stderr, done.stderr


def test_corrupt_member_of_archive_names_the_member(tmp_path):
  path = str(tmp_path / 'data.tar')
  with tarfile.open(path, 'w') as archive:
    for name, data in (('cat/a.jpg', _jpeg()), ('dog/b.jpg', _jpeg()[:100])):
      info = tarfile.TarInfo(f'root/test/{name}')
      info.size = len(data)
      archive.addfile(info, io.BytesIO(data))
  for cache in ('always', 'never'):
    config = tiny_config(**{'data.source': 'archive', 'data.path': path,
                            'data.cache_decoded': cache})
    with pytest.raises(ValueError) as error:
      input_pipeline.load_split(config.data, 'test')
    assert str(error.value) == f'corrupt or unreadable image: {path}:root/test/dog/b.jpg'


def test_unknown_or_missing_sources_are_one_line_errors(tmp_path):
  cases = [({'data.source': 'nope'}, ValueError,
            "unknown data source 'nope'; known sources: sample, archive, folder, tfds"),
           ({'data.source': 'folder', 'data.path': str(tmp_path)}, FileNotFoundError,
            f'image folder not found: {tmp_path}/test'),
           ({'data.source': 'archive', 'data.path': str(tmp_path / 'x.tar')}, FileNotFoundError,
            f'data archive not found: {tmp_path}/x.tar')]
  for overrides, kind, message in cases:
    with pytest.raises(kind) as error:
      input_pipeline.load_split(tiny_config(**overrides).data, 'test')
    assert str(error.value) == message


def test_views_dtype_shape_and_range(sample_test):
  config = tiny_config()
  batch = _batches(sample_test, config, 1)[0]
  mean, std = (np.array(v, np.float32) for v in sources.NORMALIZATION['cifar10'])
  for key in ('view1', 'view2'):
    assert batch[key].shape == (16, 16, 16, 3) and batch[key].dtype == np.float32
    pixels = batch[key] * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
  assert not np.allclose(batch['view1'], batch['view2'])


def test_stream_is_deterministic_given_the_seed(sample_test):
  config = tiny_config()
  a, b = _batches(sample_test, config, 2), _batches(sample_test, config, 2)
  config.seed = 1
  c = _batches(sample_test, config, 2)
  for x, y, z in zip(a, b, c):
    np.testing.assert_array_equal(x['view1'], y['view1'])
    np.testing.assert_array_equal(x['view2'], y['view2'])
    assert not np.allclose(x['view1'], z['view1'])


def test_stream_started_at_step_s_is_the_tail_of_the_stream(sample_test):
  config = tiny_config()
  full = _batches(sample_test, config, 5)
  tail = _batches(sample_test, config, 2, start=3)
  for a, b in zip(full[3:], tail):
    np.testing.assert_array_equal(a['view1'], b['view1'])
    np.testing.assert_array_equal(a['view2'], b['view2'])


@pytest.mark.parametrize('hosts', [2, 4])
def test_host_shards_are_disjoint_covering_slices_of_the_global_batch(sample_test, hosts):
  config = tiny_config()
  single = _batches(sample_test, config, 2)
  shards = [_batches(sample_test, config, 2, process_index=h, process_count=hosts)
            for h in range(hosts)]
  for step in range(2):
    for key in ('view1', 'view2'):
      parts = [shard[step][key] for shard in shards]
      assert all(len(p) == config.batch_size // hosts for p in parts)
      np.testing.assert_allclose(np.concatenate(parts), single[step][key], atol=1e-5)
  positions = []
  for h in range(hosts):
    firsts, per_host = input_pipeline._host_batches(0, 16, h, hosts, 1)
    positions.append([f + i for f in firsts.take(3).as_numpy_iterator() for i in range(per_host)])
  flat = sorted(sum(positions, []))
  assert flat == list(range(3 * 16))   # disjoint and covering, per_host × hosts = global


def test_batch_split_errors():
  config = tiny_config()
  with pytest.raises(ValueError, match='^per-host batch 8 \\(global batch 16 over 2 hosts\\) is '
                                       'not divisible by the 3 local devices$'):
    input_pipeline.pretrain_dataset(None, config, 0, 0, 2, local_devices=3)
  with pytest.raises(ValueError, match='^global batch 16 is not divisible by the 3 hosts$'):
    input_pipeline.pretrain_dataset(None, config, 0, 0, 3, local_devices=1)


def test_every_epoch_is_a_fresh_permutation():
  n = 1000
  order = [input_pipeline.shuffled_index(tf.range(e * n, (e + 1) * n, dtype=tf.int64), n,
                                          seed=0).numpy() for e in range(2)]
  for o in order:
    np.testing.assert_array_equal(np.sort(o), np.arange(n))
  assert np.mean(order[0] == order[1]) < 0.05


def test_draws_give_table_b1_rates_and_ignore_batching():
  n = 20000
  u = input_pipeline._draws(0, input_pipeline.PRETRAIN_STREAM, 0, n, 2 * augment.VIEW_DRAWS)
  u = u.numpy().reshape(n, 2, augment.VIEW_DRAWS)
  assert 0.0 <= u.min() and u.max() < 1.0
  columns = {'flip': augment._FLIP, 'jitter': augment._JITTER, 'gray': augment._GRAY,
             'blur': augment._BLUR, 'solarize': augment._SOLARIZE}
  for view, probabilities in enumerate(augment_config.VIEW_PROBABILITIES):
    for name, p in dict(probabilities, flip=0.5).items():
      rate = np.mean(u[:, view, columns[name]] < p)
      assert abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-12, (view, name, rate)
  part = input_pipeline._draws(0, input_pipeline.PRETRAIN_STREAM, 1234, 10,
                               2 * augment.VIEW_DRAWS).numpy()
  np.testing.assert_array_equal(part.reshape(10, 2, -1), u[1234:1244])


def _same_up_to_flip(view1, view2):
  """Per image: are its two views equal, or mirror images of each other?"""
  return (np.isclose(view1, view2, atol=1e-5).all(axis=(1, 2, 3))
          | np.isclose(view1, view2[:, :, ::-1], atol=1e-5).all(axis=(1, 2, 3)))


def test_pretrain_views_follow_the_configs_augment_recipe(sample_test):
  plain = tiny_config()
  plain.augment.crop_scale = (1.0, 1.0)   # the whole image (the central fallback crop)
  for view in ('view1', 'view2'):
    plain.augment[view].update(jitter=0.0, gray=0.0, blur=0.0, solarize=0.0)
  batch = _batches(sample_test, plain, 1)[0]
  assert _same_up_to_flip(batch['view1'], batch['view2']).all()
  batch = _batches(sample_test, tiny_config(), 1)[0]
  assert not _same_up_to_flip(batch['view1'], batch['view2']).any()   # Table B.1's views


def test_probe_dataset_sees_every_example_once(sample_test):
  config = tiny_config()
  test = list(input_pipeline.probe_dataset(sample_test, config.data, 300, train=False)
              .as_numpy_iterator())
  assert len(test) == 7 and sum(b['mask'].sum() for b in test) == 2000
  labels = np.concatenate([b['label'][b['mask']] for b in test])
  np.testing.assert_array_equal(labels, sample_test.labels)
  first = [next(input_pipeline.probe_dataset(sample_test, config.data, 300, True, epoch=e)
                .as_numpy_iterator()) for e in (0, 1)]
  assert first[0]['image'].shape == (300, 16, 16, 3)
  assert not np.array_equal(first[0]['label'], first[1]['label'])


def test_show_augmentations_grid_from_a_folder(tmp_path):
  from infomax_jax import show_augmentations  # pylint: disable=g-import-not-at-top
  root = _folder(tmp_path, 6, {'cat/big.jpg': _jpeg((50, 40))})
  os.rename(os.path.join(root, 'test'), os.path.join(root, 'train'))
  config = tiny_config(**{'data.source': 'folder', 'data.path': root,
                          'data.cache_decoded': 'never'})
  grid = show_augmentations.augmentation_grid(config, rows=3, cell=20)
  assert grid.size == (3 * 20 + 2 * show_augmentations.GAP, 3 * 20 + 2 * show_augmentations.GAP)
  pixels = np.asarray(grid)
  assert pixels[:20, :20].std() > 0 and pixels[:20, 24:44].std() > 0   # original, view 1
