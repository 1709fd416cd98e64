"""Host memory of the streaming sources: peak RSS for two split sizes, per source and
pipeline.

    python benchmarks/input_memory.py [--counts 1000,4000] [--batch 64]
        [--pipelines pretrain,probe,train] [--out benchmarks/results/input_memory.json]

Images: 400×300 JPEGs (quality 90; sample images upscaled, PIL bicubic), the same files as an
image folder, an uncompressed tar and a TFDS data set in ArrayRecord. Each (pipeline, source,
count) runs in a fresh process with configs/imagenet100.py's data settings (224-px views,
streamed: cache_decoded='never'); ru_maxrss of that process is reported, with the growth per
1,000 images between the two counts (0 when memory is independent of the split's size):
  pretrain  load the train split, take 5 two-view batches of `--batch`
  probe     load it, take 5 augmented probe batches (random resized crop + flip) of `--batch`
  train     `python -m infomax_jax.main --config=configs/imagenet100.py:r18` on the folder for
            3 steps of `--train-batch` images (online evaluation off: the folder has no val
            split), the whole training job's peak
"""
import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import report  # pylint: disable=g-import-not-at-top,wrong-import-position

SAMPLE = os.path.join(ROOT, 'infomax_jax', 'data', 'cifar10_sample.tar.gz')
SOURCES = ('folder', 'archive', 'tfds')


def make_data(root, count, mixed_sizes=False):
  """<root>/folder/train/<class>/<file>, <root>/data.tar and TFDS <root>/tfds of `count` images,
  400×300 or, with `mixed_sizes`, 320–480 × 240–330."""
  folder = os.path.join(root, 'folder')
  with tarfile.open(SAMPLE) as sample, tarfile.open(os.path.join(root, 'data.tar'), 'w') as out:
    members = [m for m in sample if m.isfile() and '/train/' in m.name]
    for i in range(count):
      member = members[i % len(members)]
      image = Image.open(io.BytesIO(sample.extractfile(member).read())).convert('RGB')
      buffer = io.BytesIO()
      size = (320 + 40 * (i % 5), 240 + 30 * (i % 4)) if mixed_sizes else (400, 300)
      image.resize(size, Image.BICUBIC).save(buffer, 'JPEG', quality=90)
      name = f'train/{member.name.split("/")[-2]}/{i:05d}.jpg'
      os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
      with open(os.path.join(folder, name), 'wb') as f:
        f.write(buffer.getvalue())
      info = tarfile.TarInfo(f'data/{name}')
      info.size = len(buffer.getvalue())
      out.addfile(info, io.BytesIO(buffer.getvalue()))
  from benchmarks import tfds_folder  # pylint: disable=g-import-not-at-top
  tfds_folder.build(folder, os.path.join(root, 'tfds'))
  return {'folder': dict(source='folder', path=folder),
          'archive': dict(source='archive', path=os.path.join(root, 'data.tar')),
          'tfds': dict(source='tfds', tfds_name='image_folder_records',
                       tfds_data_dir=os.path.join(root, 'tfds'))}


def child(data, batch, pipeline):
  """Loads the split, takes 5 batches of `pipeline`; prints the peak RSS in MiB as JSON."""
  from benchmarks import tfds_folder  # pylint: disable=g-import-not-at-top
  if data['source'] == 'tfds':   # the builder's classes are those of the folder it was made from
    tfds_folder.ImageFolderRecords.folder = os.path.join(
        os.path.dirname(data['tfds_data_dir']), 'folder')
  from configs import imagenet100  # pylint: disable=g-import-not-at-top
  from infomax_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  config = imagenet100.get_config()
  config.data.update(data)
  config.batch_size = batch
  examples = input_pipeline.load_split(config.data, 'train')
  loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  if pipeline == 'pretrain':
    dataset = input_pipeline.pretrain_dataset(examples, config, local_devices=1)
  else:
    dataset = input_pipeline.probe_dataset(examples, config.data, batch, train=True)
  for _ in zip(range(5), input_pipeline.batches(dataset)):
    pass
  print(json.dumps({'images': len(examples), 'cached': examples.images is not None,
                    'rss_mib_after_load': loaded,
                    'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


# The measured processes: TensorFlow's start-up messages are not part of their output.
CHILD_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')


def pipeline_peak_rss(data, batch, pipeline):
  """`child`'s figures, from a fresh process."""
  out = subprocess.run([sys.executable, __file__, f'--batch={batch}', f'--pipeline={pipeline}',
                        f'--child={json.dumps(data)}'], cwd=ROOT,
                       env=CHILD_ENV, capture_output=True,
                       text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def train_peak_rss(folder, batch, workdir):
  """Peak RSS in MiB of a 3-step training job on the folder (configs/imagenet100.py:r18)."""
  process = subprocess.Popen(
      [sys.executable, '-m', 'infomax_jax.main', '--config=configs/imagenet100.py:r18',
       f'--workdir={workdir}', f'--config.data.path={folder}', f'--config.batch_size={batch}',
       '--config.total_steps=3', '--config.online_eval.enabled=False'],
      cwd=ROOT, env=CHILD_ENV, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  stderr = process.stderr.read()
  _, status, usage = os.wait4(process.pid, 0)
  if status:
    raise RuntimeError(f'the training job failed: {stderr[-2000:]}')
  return {'peak_rss_mib': usage.ru_maxrss / 1024}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--counts', default='1000,4000')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--pipelines', default='pretrain,probe,train')
  parser.add_argument('--train-batch', type=int, default=16)
  parser.add_argument('--out', default='benchmarks/results/input_memory.json')
  parser.add_argument('--child', help=argparse.SUPPRESS)
  parser.add_argument('--pipeline', default='pretrain', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return child(json.loads(args.child), args.batch, args.pipeline)
  counts = [int(c) for c in args.counts.split(',')]
  pipelines = args.pipelines.split(',')
  results = {'command': 'python ' + ' '.join(sys.argv), 'batch': args.batch,
             'train_batch': args.train_batch, 'runs': {}}
  for count in counts:
    with tempfile.TemporaryDirectory() as root:
      for source, data in make_data(root, count).items():
        for pipeline in pipelines:
          if pipeline == 'train':
            if source != 'folder':
              continue
            run = train_peak_rss(data['path'], args.train_batch, os.path.join(root, 'workdir'))
          else:
            run = pipeline_peak_rss(data, args.batch, pipeline)
          results['runs'].setdefault(f'{pipeline}/{source}', {})[count] = run
          print(f'{pipeline:8s} {source:8s} {count:6d} images: peak RSS '
                f'{run["peak_rss_mib"]:.0f} MiB', flush=True)
  print(f'\n{"pipeline/source":18s} ' + ' '.join(f'{c:>9d}' for c in counts) +
        '   MiB per 1,000 images')
  for name, runs in results['runs'].items():
    peaks = [runs[c]['peak_rss_mib'] for c in counts]
    slope = (peaks[-1] - peaks[0]) / (counts[-1] - counts[0]) * 1000
    runs['mib_per_1000_images'] = slope
    print(f'{name:18s} ' + ' '.join(f'{p:9.0f}' for p in peaks) + f'   {slope:+.1f}')
  report.write_json(args.out, results)


if __name__ == '__main__':
  main()
