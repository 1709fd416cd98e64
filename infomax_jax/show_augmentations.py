"""Writes a PNG grid of the pretraining views: one row per image, original | view 1 | view 2.

    python -m infomax_jax.show_augmentations --config=configs/demo.py \\
        --out=docs/augmentations_cifar10.png [--rows=8] [--config.data.source=folder ...]

The rows are the first `--rows` examples of the configured pretraining stream (global examples
0, 1, …: what the first training step sees, whatever the batch size), views de-normalised; the
original is the whole image, fitted into its cell. Cells are `--cell` pixels (nearest-neighbour
upscaling of small views).
"""
from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np
from PIL import Image

from infomax_jax import cli
from infomax_jax import input_pipeline
from infomax_jax import sources

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/demo.py[:arg].')
flags.DEFINE_string('out', None, 'PNG file to write.')
flags.DEFINE_integer('rows', 8, 'Number of images (rows).')
flags.DEFINE_integer('cell', 128, 'Cell size in pixels.')
flags.mark_flags_as_required(['config', 'out'])
GAP = 4


def _cell(pixels, size):
  """A uint8 image fitted (aspect kept) into a white size×size cell."""
  image = Image.fromarray(pixels)
  scale = size / max(image.size)
  resample = Image.NEAREST if scale >= 1 and scale == int(scale) else Image.BICUBIC
  image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                       resample)
  cell = Image.new('RGB', (size, size), 'white')
  cell.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
  return cell


def augmentation_grid(config, rows, cell):
  """PIL image: `rows` rows of (original, view 1, view 2) from the start of the stream."""
  config = config.copy_and_resolve_references()
  config.batch_size = rows
  examples = input_pipeline.load_split(config.data, config.data.train_split)
  batch = next(input_pipeline.batches(
      input_pipeline.pretrain_dataset(examples, config, local_devices=1)))
  indices = input_pipeline.shuffled_index(np.arange(rows), len(examples), config.seed).numpy()
  mean, std = (np.array(v, np.float32) for v in sources.NORMALIZATION[config.data.normalization])
  grid = Image.new('RGB', (3 * cell + 2 * GAP, rows * cell + (rows - 1) * GAP), 'white')
  for row, index in enumerate(indices):
    views = [np.clip(batch[k][row] * std + mean, 0, 1) for k in ('view1', 'view2')]
    cells = [input_pipeline.image_at(examples, index)] + [
        (v * 255).round().astype(np.uint8) for v in views]
    for column, pixels in enumerate(cells):
      grid.paste(_cell(pixels, cell), (column * (cell + GAP), row * (cell + GAP)))
  return grid


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  augmentation_grid(FLAGS.config, FLAGS.rows, FLAGS.cell).save(FLAGS.out)
  print(f'wrote {FLAGS.out}')


def run():
  cli.run(main)


if __name__ == '__main__':
  run()
