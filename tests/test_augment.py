"""Augmentations against their definitions (Table B.1, torchvision, PIL), op by op."""
import math

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf
from PIL import Image

from infomax_jax import augment
from infomax_jax import sources

RNG = np.random.default_rng(0)
# PIL rounds to 8 bits after each of its two resampling passes; the second pass carries the
# first one's rounding with its weights (sum of |w| up to ~1.3 for bicubic): at most ~1.2 levels.
PIL_ROUNDING = 1.5


def _planar(images):
  return tf.constant(np.transpose(images, [0, 3, 1, 2]), tf.float32)


def _nhwc(planar):
  return np.transpose(np.asarray(planar), [0, 2, 3, 1])


def _crop_draws(n, seed=0):
  return tf.random.stateless_uniform([n, augment.CROP_DRAWS], [seed, 1])


def _torchvision_get_params(u, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  """RandomResizedCrop.get_params in Python floats, fed with the same uniforms."""
  area = height * width
  for i in range(10):
    target = area * (scale[0] + (scale[1] - scale[0]) * u[i])
    aspect = math.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[10 + i])
    w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(u[20] * (height - h + 1)), int(u[21] * (width - w + 1)), h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize('height,width', [(32, 32), (240, 320), (8, 200)])
def test_crop_windows_follow_torchvision(height, width):
  n = 4000
  u = _crop_draws(n)
  windows = np.stack([w.numpy() for w in augment.crop_windows(u, height, width)], axis=1)
  top, left, h, w = windows.T
  assert np.all((top >= 0) & (left >= 0) & (h >= 1) & (w >= 1))
  assert np.all((top + h <= height) & (left + w <= width))
  reference = np.array([_torchvision_get_params(row, height, width) for row in u.numpy()])
  assert np.mean(np.all(windows == reference, axis=1)) > 0.995   # float32 vs float64 rounding
  if height == width:  # no fallback possible: area and aspect within bounds up to rounding
    area = h * w / (height * width)
    assert area.min() >= 0.08 - 2.5 / height and area.max() <= 1.0
    aspect = w / h
    assert aspect.min() >= 0.75 - 1.5 / h.min() and aspect.max() <= 4 / 3 + 1.5 / h.min()
    assert area.min() < 0.1 and area.max() > 0.95   # the whole scale range is used


def test_crop_fallback_is_central_clamped_crop():
  u = np.array(_crop_draws(1)).copy()
  u[0, :10] = 0.999   # area ≈ the whole image: never fits a 4×400 image at ratio ≥ 3/4
  top, left, h, w = (int(x[0]) for x in augment.crop_windows(tf.constant(u), 4, 400))
  assert (h, w) == (4, round(4 * 4 / 3)) and (top, left) == (0, (400 - w) // 2)


@pytest.mark.parametrize('window,size', [((3, 5, 20, 27), 32), ((0, 0, 40, 50), 32),
                                         ((10, 7, 6, 9), 32), ((0, 0, 40, 50), 16),
                                         ((1, 2, 38, 47), 40), ((0, 0, 40, 50), 3)])
def test_resized_crop_matches_pil_bicubic(window, size):
  image = RNG.integers(0, 256, (40, 50, 3), np.uint8)
  top, left, h, w = window
  expected = np.asarray(Image.fromarray(image).crop((left, top, left + w, top + h)).resize(
      (size, size), Image.BICUBIC), np.float32)
  for flip in (False, True):
    out = augment.resize_window(tf.constant(image[None] / 255.0, tf.float32), [top], [left], [h],
                                [w], ([size], [size]), ([0], [0]), size, tf.constant([flip]))
    out = _nhwc(out)[0] * 255
    assert out.dtype == np.float32 and out.shape == (size, size, 3)
    np.testing.assert_allclose(out, expected[:, ::-1] if flip else expected, atol=PIL_ROUNDING)


def test_single_image_crops_equal_batched_crops():
  image = tf.constant(RNG.random((24, 40, 3)), tf.float32)
  u = _crop_draws(6, seed=3)
  single = augment.random_resized_crop(image, u, 16)
  batched = augment.random_resized_crop(tf.repeat(image[None], 6, axis=0), u, 16)
  assert single.shape == (6, 3, 16, 16)
  np.testing.assert_allclose(single, batched, atol=1e-5)


@pytest.mark.parametrize('shape', [(32, 32), (40, 30), (300, 500)])
def test_center_view_matches_torchvision_resize_center_crop(shape):
  image = RNG.integers(0, 256, shape + (3,), np.uint8)
  size = 32 if shape[0] < 100 else 224
  pil = Image.fromarray(image)
  short = int(size * 8 / 7)
  h, w = shape
  new = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
  resized = pil.resize((new[1], new[0]), Image.BICUBIC)
  top, left = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
  expected = np.asarray(resized.crop((left, top, left + size, top + size)), np.float32)
  image = tf.constant(image / 255.0, tf.float32)
  for images in (image[None], image):   # a batch, and one image (zero-padded to its canvas)
    out = _nhwc(augment.center_view(images, size))[0] * 255
    np.testing.assert_allclose(out, expected, atol=PIL_ROUNDING)


def test_grayscale_values_exact():
  images = RNG.random((4, 8, 8, 3)).astype(np.float32)
  apply = tf.constant([True, False, True, False])
  out = _nhwc(augment.grayscale(_planar(images), apply))
  gray = np.float32(0.2989) * images[..., 0] + np.float32(0.587) * images[..., 1] + (
      np.float32(0.114) * images[..., 2])
  for i in (0, 2):
    for c in range(3):
      np.testing.assert_allclose(out[i, ..., c], gray[i], rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(out[[1, 3]], images[[1, 3]])


def test_solarize_values_exact():
  levels = np.arange(256, dtype=np.float32) / 255
  images = np.broadcast_to(levels[None, :, None, None], (2, 256, 1, 3)).copy()
  out = _nhwc(augment.solarize(_planar(images), tf.constant([True, False])))
  expected = np.where(np.arange(256) >= 128, 1 - levels, levels)   # PIL solarize(128)
  np.testing.assert_array_equal(out[0, :, 0, 0], expected)
  np.testing.assert_array_equal(out[1], images[1])


def _jitter_one(images, op, factor):
  """One adjustment (0 brightness, 1 contrast, 2 saturation, 3 hue, 4 none) on every image."""
  n = len(images)
  if op == 3:
    return _nhwc(augment._hue_where(_planar(images), tf.fill([n], True), tf.fill([n], factor)))
  factors = np.full((n, 4), factor, np.float32)
  return _nhwc(augment._adjust_in_order(_planar(images), tf.fill([n, 1], op), factors))


def _gray_np(x):
  return (np.float32(0.2989) * x[..., 0] + np.float32(0.587) * x[..., 1]
          + np.float32(0.114) * x[..., 2])[..., None]


@pytest.mark.parametrize('factor', [0.6, 1.4])
def test_jitter_adjustments_follow_torchvision(factor):
  images = RNG.random((3, 8, 8, 3)).astype(np.float32)
  blend = lambda other: np.clip(factor * images + (1 - factor) * other, 0, 1)
  np.testing.assert_allclose(_jitter_one(images, 0, factor), np.clip(factor * images, 0, 1),
                             atol=1e-6)
  mean = _gray_np(images).mean(axis=(1, 2, 3), keepdims=True)
  np.testing.assert_allclose(_jitter_one(images, 1, factor), blend(mean), atol=1e-6)
  np.testing.assert_allclose(_jitter_one(images, 2, factor), blend(_gray_np(images)), atol=1e-6)
  np.testing.assert_array_equal(_jitter_one(images, 4, factor), images)


@pytest.mark.parametrize('delta', [-0.1, 0.03, 0.1])
def test_hue_matches_hsv_rotation(delta):
  images = RNG.random((3, 8, 8, 3)).astype(np.float32)
  images[0, 0, 0] = 0.5   # a gray pixel keeps its value
  out = _jitter_one(images, 3, delta)
  expected = tf.image.adjust_hue(images, delta).numpy()   # HSV rotation, as torchvision's
  np.testing.assert_allclose(out, expected, atol=2e-6)
  np.testing.assert_allclose(out[0, 0, 0], 0.5, atol=1e-7)


def test_color_jitter_range_and_identity_when_off():
  images = RNG.random((64, 8, 8, 3)).astype(np.float32)
  draws = tf.random.stateless_uniform([64, 8], [1, 2])
  apply = tf.constant(np.arange(64) % 4 != 0)
  out = _nhwc(augment.color_jitter(_planar(images), apply, draws[:, :4], draws[:, 4:]))
  assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
  np.testing.assert_array_equal(out[::4], images[::4])
  assert np.abs(out[1::4] - images[1::4]).mean() > 1e-3


def test_blur_is_the_truncated_gaussian_and_lowers_high_frequencies():
  images = RNG.random((4, 32, 32, 3)).astype(np.float32)
  sigma = np.array([0.1, 0.7, 2.0, 1.0], np.float32)
  apply = tf.constant([True, True, True, False])
  out = _nhwc(augment.gaussian_blur(_planar(images), tf.constant(sigma), apply))
  for i in range(3):
    expected = scipy.ndimage.gaussian_filter(images[i].astype(np.float64), (sigma[i], sigma[i], 0),
                                             mode='nearest', truncate=6 / sigma[i])
    np.testing.assert_allclose(out[i], expected, atol=1e-5)
  np.testing.assert_array_equal(out[3], images[3])

  def high_frequency_energy(x):
    spectrum = np.abs(np.fft.fft2(x - x.mean(axis=(0, 1)), axes=(0, 1)))**2
    return spectrum[8:25, 8:25].sum()

  energy = [high_frequency_energy(x) for x in (images[0], out[0], out[1], out[2])]
  assert energy[1] <= energy[0] and energy[3] < energy[2] < 0.5 * energy[0]   # sigma 0.1, 0.7, 2
  flat = np.full((1, 16, 16, 3), 0.25, np.float32)
  np.testing.assert_allclose(_nhwc(augment.gaussian_blur(_planar(flat), tf.constant([2.0]),
                                                         tf.constant([True]))), flat, atol=1e-6)


def test_pretrain_views_dtype_range_and_per_view_rates():
  n = 512
  crops = tf.constant(RNG.random((2 * n, 3, 8, 8)), tf.float32)
  u = tf.random.stateless_uniform([n, 2, augment.VIEW_DRAWS], [5, 6])
  view1, view2 = augment.pretrain_views(crops, u, 'cifar10')
  mean, std = (np.array(v, np.float32) for v in sources.NORMALIZATION['cifar10'])
  for view in (view1, view2):
    assert view.dtype == tf.float32 and view.shape == (n, 8, 8, 3)
    pixels = np.asarray(view) * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
  # Grayscale (the only op that makes the three channels equal) on ≈ 20 % of each view.
  for view in (view1, view2):
    pixels = np.asarray(view) * std + mean
    gray = np.all(np.ptp(pixels, axis=-1) < 1e-5, axis=(1, 2))
    assert abs(gray.mean() - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n)


def test_photometric_is_a_pure_function_of_image_and_draws():
  crops = tf.constant(RNG.random((12, 3, 8, 8)), tf.float32)
  u = tf.random.stateless_uniform([6, 2, augment.VIEW_DRAWS], [7, 8])
  first = augment.pretrain_views(crops, u, 'cifar10')
  again = augment.pretrain_views(crops, u, 'cifar10')
  half = augment.pretrain_views(crops[6:], u[3:], 'cifar10')
  for a, b, c in zip(first, again, half):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a[3:], c, atol=1e-6)
