"""Thesis augmentations (App. B.1, Table B.1) as stateless tf ops on one float image in [0, 1].

Each op takes an explicit stateless seed (shape [2] int), so a view is a pure function of the
image and its seed: the stream is reproducible and resumable from any position. Definitions
follow torchvision (RandomResizedCrop.get_params, ColorJitter, rgb_to_grayscale).
"""
import math

import tensorflow as tf

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
NORMALIZATION = {
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
    'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# Per-view probabilities of Table B.1.
VIEW_PROBABILITIES = (
    {'flip': 0.5, 'jitter': 0.8, 'gray': 0.2, 'blur': 1.0, 'solarize': 0.0},
    {'flip': 0.5, 'jitter': 0.8, 'gray': 0.2, 'blur': 0.1, 'solarize': 0.2},
)


def _uniform(seed, low=0.0, high=1.0, shape=()):
  return tf.random.stateless_uniform(shape, seed, low, high, dtype=tf.float32)


def crop_window(seed, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts=10):
  """(top, left, h, w) of torchvision's RandomResizedCrop.get_params, 10 attempts vectorised."""
  seeds = tf.random.experimental.stateless_split(seed, 4)
  h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  area = h_f * w_f * _uniform(seeds[0], scale[0], scale[1], [attempts])
  aspect = tf.exp(_uniform(seeds[1], math.log(ratio[0]), math.log(ratio[1]), [attempts]))
  w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
  h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
  ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
  first = tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32)

  def sampled():
    ch, cw = h[first], w[first]
    top = tf.random.stateless_uniform([], seeds[2], 0, height - ch + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], seeds[3], 0, width - cw + 1, dtype=tf.int32)
    return top, left, ch, cw

  def fallback():
    in_ratio = w_f / h_f
    cw = tf.where(in_ratio < ratio[0], width,
                  tf.where(in_ratio > ratio[1], tf.cast(tf.round(h_f * ratio[1]), tf.int32), width))
    ch = tf.where(in_ratio < ratio[0], tf.cast(tf.round(w_f / ratio[0]), tf.int32), height)
    return (height - ch) // 2, (width - cw) // 2, ch, cw

  return tf.cond(tf.reduce_any(ok), sampled, fallback)


def resize(image, size):
  """Bicubic resize with anti-aliasing (PIL semantics, as the official PIL pipelines), clipped."""
  return tf.clip_by_value(tf.image.resize(image, size, method='bicubic', antialias=True), 0.0, 1.0)


def random_resized_crop(image, seed, size, scale=(0.08, 1.0)):
  shape = tf.shape(image)
  top, left, h, w = crop_window(seed, shape[0], shape[1], scale)
  crop = tf.image.crop_to_bounding_box(image, top, left, h, w)
  return resize(crop, (size, size))


def grayscale(image):
  gray = tf.tensordot(image, tf.constant(GRAY_WEIGHTS, tf.float32), axes=[[-1], [0]])[..., None]
  return tf.broadcast_to(gray, tf.shape(image))


def _blend(image, other, factor):
  return tf.clip_by_value(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def color_jitter(image, seed, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1):
  """torchvision ColorJitter: the four adjustments with random factors, in random order."""
  seeds = tf.random.experimental.stateless_split(seed, 5)
  b = _uniform(seeds[0], 1 - brightness, 1 + brightness)
  c = _uniform(seeds[1], 1 - contrast, 1 + contrast)
  s = _uniform(seeds[2], 1 - saturation, 1 + saturation)
  h = _uniform(seeds[3], -hue, hue)
  order = tf.argsort(_uniform(seeds[4], shape=[4]))
  ops = [
      lambda x: tf.clip_by_value(x * b, 0.0, 1.0),
      lambda x: _blend(x, tf.reduce_mean(grayscale(x)), c),
      lambda x: _blend(x, grayscale(x), s),
      lambda x: tf.image.adjust_hue(x, h),
  ]
  for i in range(4):
    image = tf.switch_case(order[i], [lambda op=op: op(image) for op in ops])
    image = tf.ensure_shape(image, [None, None, 3])
  return image


def gaussian_blur(image, seed, sigma_range=(0.1, 2.0)):
  """Separable Gaussian blur with sigma ~ U(0.1, 2), kernel radius 3·max sigma, reflect padding."""
  sigma = _uniform(seed, *sigma_range)
  radius = int(math.ceil(3 * sigma_range[1]))
  x = tf.range(-radius, radius + 1, dtype=tf.float32)
  kernel = tf.exp(-0.5 * tf.square(x / sigma))
  kernel = kernel / tf.reduce_sum(kernel)
  padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], 'REFLECT')
  kh = tf.tile(kernel[:, None, None, None], [1, 1, 3, 1])
  kw = tf.tile(kernel[None, :, None, None], [1, 1, 3, 1])
  out = tf.nn.depthwise_conv2d(padded, kh, [1, 1, 1, 1], 'VALID')
  out = tf.nn.depthwise_conv2d(out, kw, [1, 1, 1, 1], 'VALID')
  return out[0]


def solarize(image, threshold=128 / 255):
  """PIL ImageOps.solarize at 128 on [0, 255]: invert every value at or above the threshold."""
  return tf.where(image >= threshold, 1.0 - image, image)


def normalize(image, dataset):
  mean, std = NORMALIZATION[dataset]
  return (image - tf.constant(mean)) / tf.constant(std)


def _maybe(seed, probability, op, image):
  if probability <= 0.0:
    return image
  if probability >= 1.0:
    return op(image)
  return tf.cond(_uniform(seed) < probability, lambda: op(image), lambda: image)


def pretrain_view(image, seed, size, probabilities, dataset):
  """One augmented view per Table B.1: crop, flip, jitter, grayscale, blur, solarize, normalise."""
  seeds = tf.random.experimental.stateless_split(seed, 10)
  image = random_resized_crop(image, seeds[0], size)
  image = _maybe(seeds[1], probabilities['flip'], tf.image.flip_left_right, image)
  image = _maybe(seeds[2], probabilities['jitter'], lambda x: color_jitter(x, seeds[3]), image)
  image = _maybe(seeds[4], probabilities['gray'], grayscale, image)
  image = _maybe(seeds[5], probabilities['blur'], lambda x: gaussian_blur(x, seeds[6]), image)
  image = _maybe(seeds[7], probabilities['solarize'], solarize, image)
  return normalize(image, dataset)


def probe_train_view(image, seed, size, dataset):
  """Linear-probe training transform (App. B.1.2): random resized crop + horizontal flip."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  image = random_resized_crop(image, seeds[0], size)
  image = _maybe(seeds[1], 0.5, tf.image.flip_left_right, image)
  return normalize(image, dataset)


def probe_test_view(image, size, dataset):
  """Test transform (App. B.1.2): resize the short side to size·8/7 bicubic, centre crop."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  short = int(size * 8 / 7)
  scale = short / tf.reduce_min(shape)
  new = tf.cast(tf.round(shape * scale), tf.int32)
  image = resize(image, new)
  top = (new[0] - size) // 2
  left = (new[1] - size) // 2
  return normalize(tf.image.crop_to_bounding_box(image, top, left, size, size), dataset)
