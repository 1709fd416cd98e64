"""Input pipeline throughput: two-view pretraining images/s, infomax_jax's tf.data pipeline
against a per-image PIL + NumPy reference.

    python benchmarks/input_pipeline.py [--seconds 8] [--rounds 2] [--workers 2]
        [--out benchmarks/results/input_pipeline.json]

Cases (both views of every image, Table B.1, normalised float32 NHWC batches):
  cifar10-32  the embedded CIFAR-10 sample (10,000 32×32 JPEGs) decoded once into memory
              (ours: config.data.cache_decoded; the reference: PIL images made from the uint8
              arrays, as torchvision.datasets.CIFAR10 does), 32-px views, batch 256.
  jpeg-224    1,000 sample images upscaled (PIL bicubic) to 320×240 and written as JPEG
              (quality 90) into a temporary image folder, decoded on the fly by both (ours:
              source=folder, cache_decoded=False; the reference: PIL.Image.open, as
              torchvision's ImageFolder), 224-px views, batch 64, ImageNet normalisation.
  tar-224     the same files streamed by ours from an uncompressed tar (source=archive: read
              by member offset); the reference as in jpeg-224.
  tfds-224    the same JPEG bytes streamed by ours from a TFDS data set in ArrayRecord
              (source=tfds, benchmarks/tfds_folder.py); the reference as in jpeg-224.

The reference applies the transforms the way the official CorInfoMax code does (torchvision
transforms on PIL images, one image at a time, in Python), without torch: get_params of
RandomResizedCrop + PIL crop and bicubic resize, flip, ColorJitter (ImageEnhance brightness,
contrast, color and the HSV hue shift, in random order), grayscale, PIL GaussianBlur(sigma),
PIL solarize, ToTensor + Normalize in NumPy, stacked into batches. It runs in one process
forked before TensorFlow is imported, timing itself ('PIL x1', like a DataLoader with
num_workers=0), and in `--workers` forked processes ('PIL xN', like a DataLoader with
num_workers=N, batches pickled back). The pipelines alternate for `--rounds` rounds of `--seconds` each, every
round with a fresh iterator and an untimed warm-up batch; reported: the median img/s per
pipeline, ours / reference, and the CPU time per image of ours and of 'PIL x1' (the measuring
process's user + system time: what the pipelines cost regardless of how many cores are free),
and ours' process's peak RSS after each case (cumulative over the cases run so far; the per-source memory
against the split's size is benchmarks/input_memory.py's).
"""
import argparse
import collections
import io
import math
import multiprocessing
import os
import random
import resource
import statistics
import sys
import tarfile
import tempfile
import time

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import report  # pylint: disable=g-import-not-at-top,wrong-import-position
SAMPLE = os.path.join(ROOT, 'infomax_jax', 'data', 'cifar10_sample.tar.gz')
MEAN_STD = {'cifar10': ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
            'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
VIEW_PROBABILITIES = ((1.0, 0.0), (0.1, 0.2))   # (blur, solarize); flip 0.5, jitter 0.8, gray 0.2


# ---- the PIL reference, per image in Python -----------------------------------------------------

def random_resized_crop(img, size, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  width, height = img.size
  for _ in range(10):
    area = width * height * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top, left = rng.randint(0, height - h), rng.randint(0, width - w)
      break
  else:
    in_ratio = width / height
    w = round(height * ratio[1]) if in_ratio > ratio[1] else width
    h = round(width / ratio[0]) if in_ratio < ratio[0] else height
    top, left = (height - h) // 2, (width - w) // 2
  return img.crop((left, top, left + w, top + h)).resize((size, size), Image.BICUBIC)


def adjust_hue(img, factor):
  h, s, v = img.convert('HSV').split()
  hue = np.asarray(h, np.uint8) + np.uint8(int(factor * 255) % 256)
  return Image.merge('HSV', (Image.fromarray(hue, 'L'), s, v)).convert('RGB')


def color_jitter(img, rng):
  b, c, s = rng.uniform(0.6, 1.4), rng.uniform(0.6, 1.4), rng.uniform(0.8, 1.2)
  h = rng.uniform(-0.1, 0.1)
  ops = (lambda x: ImageEnhance.Brightness(x).enhance(b),
         lambda x: ImageEnhance.Contrast(x).enhance(c),
         lambda x: ImageEnhance.Color(x).enhance(s),
         lambda x: adjust_hue(x, h))
  for i in rng.sample(range(4), 4):
    img = ops[i](img)
  return img


def reference_view(img, size, rng, blur, solarize, normalization):
  img = random_resized_crop(img, size, rng)
  if rng.random() < 0.5:
    img = img.transpose(Image.FLIP_LEFT_RIGHT)
  if rng.random() < 0.8:
    img = color_jitter(img, rng)
  if rng.random() < 0.2:
    img = img.convert('L').convert('RGB')
  if rng.random() < blur:
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.1, 2.0)))
  if rng.random() < solarize:
    img = ImageOps.solarize(img, 128)
  mean, std = MEAN_STD[normalization]
  return (np.asarray(img, np.float32) / 255 - np.array(mean, np.float32)) / np.array(std,
                                                                                     np.float32)


CASES = {}   # filled in the parent before the workers fork


def reference_batch(name, step):
  case = CASES[name]
  rng = random.Random(step)
  views = ([], [])
  for i in range(step * case['batch'], (step + 1) * case['batch']):
    source = case['images'] if 'images' in case else case['paths']
    item = source[i % len(source)]
    img = Image.fromarray(item) if 'images' in case else Image.open(item).convert('RGB')
    for view, (blur, solarize) in zip(views, VIEW_PROBABILITIES):
      view.append(reference_view(img, case['size'], rng, blur, solarize, case['normalization']))
  return np.stack(views[0]), np.stack(views[1])


# ---- the cases ----------------------------------------------------------------------------------

def sample_train_members():
  with tarfile.open(SAMPLE) as archive:
    return [(m.name, archive.extractfile(m).read()) for m in archive
            if m.isfile() and '/train/' in m.name]


def make_cases(folder):
  members = sample_train_members()
  images = np.stack([np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))
                     for _, data in members])
  paths = []
  for name, data in members[:1000]:
    directory = os.path.join(folder, 'train', name.split('/')[-2])
    os.makedirs(directory, exist_ok=True)
    paths.append(os.path.join(directory, os.path.basename(name)))
    Image.open(io.BytesIO(data)).convert('RGB').resize((320, 240), Image.BICUBIC).save(
        paths[-1], quality=90)
  tar = os.path.join(os.path.dirname(folder), 'jpeg-224.tar')
  with tarfile.open(tar, 'w') as archive:
    archive.add(os.path.join(folder, 'train'), arcname='images/train')
  from benchmarks import tfds_folder  # pylint: disable=g-import-not-at-top
  tfds_dir = os.path.join(os.path.dirname(folder), 'tfds')
  tfds_folder.build(folder, tfds_dir)
  jpeg_224 = dict(paths=paths, batch=64, size=224, normalization='imagenet')
  return {
      'cifar10-32': dict(images=images, batch=256, size=32, normalization='cifar10',
                         data=dict(source='sample', cache_decoded='always')),
      'jpeg-224': dict(jpeg_224, data=dict(source='folder', path=folder, cache_decoded='never')),
      'tar-224': dict(jpeg_224, data=dict(source='archive', path=tar, cache_decoded='never')),
      'tfds-224': dict(jpeg_224, data=dict(source='tfds', tfds_name='image_folder_records',
                                           tfds_data_dir=tfds_dir, cache_decoded='never')),
  }


def _cpu_seconds():
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def time_loop(next_batch, batch, seconds):
  """(images/s, CPU milliseconds of this process per image) after one untimed batch."""
  next_batch()
  start, cpu, images = time.perf_counter(), _cpu_seconds(), 0
  while time.perf_counter() - start < seconds:
    next_batch()
    images += batch
  return images / (time.perf_counter() - start), (_cpu_seconds() - cpu) / images * 1e3


def ours_dataset(case):
  from configs import demo  # pylint: disable=g-import-not-at-top
  from infomax_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  config = demo.get_config()
  config.data.update(case['data'])
  config.data.image_size, config.data.normalization = case['size'], case['normalization']
  config.batch_size = case['batch']
  examples = input_pipeline.load_split(config.data, 'train')
  return lambda: input_pipeline.pretrain_dataset(examples, config, local_devices=1)


def pool_batches(pool, name, workers):
  """next_batch() over the worker pool, keeping 2 batches per worker in flight (a DataLoader's
  default prefetch)."""
  steps = iter(range(10**9))
  pending = collections.deque(pool.apply_async(reference_batch, (name, next(steps)))
                              for _ in range(2 * workers))

  def next_batch():
    pending.append(pool.apply_async(reference_batch, (name, next(steps))))
    return pending.popleft().get()

  return next_batch


def reference_round(name, seconds):
  """time_loop of the reference in this (forked, TensorFlow-free) process."""
  steps = iter(range(10**9))
  return time_loop(lambda: reference_batch(name, next(steps)), CASES[name]['batch'], seconds)


def measure(name, solo, pool, args):
  case = CASES[name]
  dataset = ours_dataset(case)
  results = {'ours': [], 'pil_x1': [], f'pil_x{args.workers}': []}
  for r in range(args.rounds):
    iterator = dataset().as_numpy_iterator()
    results['ours'].append(time_loop(lambda: next(iterator), case['batch'], args.seconds))
    del iterator
    results['pil_x1'].append(solo.apply(reference_round, (name, args.seconds)))
    results[f'pil_x{args.workers}'].append(time_loop(pool_batches(pool, name, args.workers),
                                                     case['batch'], args.seconds))
    print(f'  {name} round {r + 1}: ' + ', '.join(f'{k} {v[-1][0]:.0f} img/s'
                                                  for k, v in results.items()), flush=True)
  summary = {k: {'img_per_s': [x for x, _ in v], 'median': statistics.median(x for x, _ in v)}
             for k, v in results.items()}
  for k in ('ours', 'pil_x1'):   # CPU time of the measuring process (the PIL xN workers' is not)
    summary[k]['cpu_ms_per_img'] = statistics.median(c for _, c in results[k])
  summary['process_peak_rss_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return summary


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--seconds', type=float, default=8.0)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--workers', type=int, default=2)
  parser.add_argument('--out', default='benchmarks/results/input_pipeline.json')
  args = parser.parse_args()
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  results = {'command': 'python ' + ' '.join(sys.argv), 'cpus': os.cpu_count(),
             'load_average_before': os.getloadavg(), 'cases': {}}
  with tempfile.TemporaryDirectory() as root:
    CASES.update(make_cases(os.path.join(root, 'folder')))
    # Fork the reference workers before this process imports TensorFlow.
    fork = multiprocessing.get_context('fork')
    with fork.Pool(1) as solo, fork.Pool(args.workers) as pool:
      for name in CASES:
        results['cases'][name] = measure(name, solo, pool, args)
  results['load_average_after'] = os.getloadavg()
  reference = f'pil_x{args.workers}'
  print(f'\n{"case":12s} {"ours img/s":>11s} {"PIL x1":>8s} {"PIL x" + str(args.workers):>8s} '
        f'{"ours/x1":>8s} {"ours/x" + str(args.workers):>8s}   CPU ms/img ours, PIL x1   process peak RSS')
  for name, result in results['cases'].items():
    ours, one, many = (result[k]['median'] for k in ('ours', 'pil_x1', reference))
    result['ratio_to_pil_x1'], result[f'ratio_to_{reference}'] = ours / one, ours / many
    print(f'{name:12s} {ours:11.0f} {one:8.0f} {many:8.0f} {ours / one:8.2f} {ours / many:8.2f}   '
          f'{result["ours"]["cpu_ms_per_img"]:.3f}, {result["pil_x1"]["cpu_ms_per_img"]:.3f}   '
          f'peak RSS {result["process_peak_rss_mib"]:.0f} MiB')
  report.write_json(args.out, results)


if __name__ == '__main__':
  main()
