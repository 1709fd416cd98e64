"""Pretraining entry point.

    python -m infomax_jax.main --config=configs/demo.py --workdir=/tmp/demo [--config.x=y ...]

Restarting the same command resumes from the latest checkpoint in --workdir. With several
processes (multi-host), pass --coordinator, --num_processes and --process_id, or let
jax.distributed detect them on TPU pods and SLURM.
"""
from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from infomax_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/demo.py[:arg].',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.ERROR)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run():
  try:
    app.run(main)
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    raise SystemExit(f'error: {e}') from None


if __name__ == '__main__':
  run()
