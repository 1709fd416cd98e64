"""Host memory of the streaming sources: peak RSS after loading a split and taking 5 batches,
for two split sizes, per source (issue #16's measurement).

    python benchmarks/input_memory.py [--counts 1000,4000] [--batch 64]
        [--out benchmarks/results/input_memory.json]

Images: 400×300 JPEGs (quality 90; sample images upscaled, PIL bicubic), the same files as an
image folder, an uncompressed tar and a TFDS data set in ArrayRecord. Each (source, count) runs
in a fresh process with configs/imagenet100.py's data settings (224-px views, streamed:
cache_decoded='never') at `--batch` images per batch; ru_maxrss of that process is reported,
with the growth per image between the two counts (0 when memory is independent of the split).
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


def make_data(root, count):
  """<root>/folder/train/<class>/<file>, <root>/data.tar and TFDS <root>/tfds of `count` images."""
  folder = os.path.join(root, 'folder')
  with tarfile.open(SAMPLE) as sample, tarfile.open(os.path.join(root, 'data.tar'), 'w') as out:
    members = [m for m in sample if m.isfile() and '/train/' in m.name]
    for i in range(count):
      member = members[i % len(members)]
      image = Image.open(io.BytesIO(sample.extractfile(member).read())).convert('RGB')
      buffer = io.BytesIO()
      image.resize((400, 300), Image.BICUBIC).save(buffer, 'JPEG', quality=90)
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


def child(data, batch):
  """Loads the split, takes 5 batches; prints the peak RSS in MiB as JSON."""
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
  dataset = input_pipeline.pretrain_dataset(examples, config, local_devices=1)
  for _ in zip(range(5), input_pipeline.batches(dataset)):
    pass
  print(json.dumps({'images': len(examples), 'cached': examples.images is not None,
                    'rss_mib_after_load': loaded,
                    'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--counts', default='1000,4000')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--out', default='benchmarks/results/input_memory.json')
  parser.add_argument('--child', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return child(json.loads(args.child), args.batch)
  counts = [int(c) for c in args.counts.split(',')]
  results = {'command': 'python ' + ' '.join(sys.argv), 'batch': args.batch, 'runs': {}}
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  for count in counts:
    with tempfile.TemporaryDirectory() as root:
      for source, data in make_data(root, count).items():
        out = subprocess.run([sys.executable, __file__, f'--batch={args.batch}',
                              f'--child={json.dumps(data)}'], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True)
        run = json.loads(out.stdout.strip().splitlines()[-1])
        results['runs'].setdefault(source, {})[count] = run
        print(f'{source:8s} {count:6d} images: peak RSS {run["peak_rss_mib"]:.0f} MiB '
              f'(after load {run["rss_mib_after_load"]:.0f}), cached={run["cached"]}', flush=True)
  print(f'\n{"source":8s} ' + ' '.join(f'{c:>9d}' for c in counts) + '   MiB per 1,000 images')
  for source, runs in results['runs'].items():
    peaks = [runs[c]['peak_rss_mib'] for c in counts]
    slope = (peaks[-1] - peaks[0]) / (counts[-1] - counts[0]) * 1000
    runs['mib_per_1000_images'] = slope
    print(f'{source:8s} ' + ' '.join(f'{p:9.0f}' for p in peaks) + f'   {slope:+.1f}')
  report.write_json(args.out, results)


if __name__ == '__main__':
  main()
