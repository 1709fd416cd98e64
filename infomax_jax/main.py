"""Pretraining entry point.

    python -m infomax_jax.main --config=configs/demo.py --workdir=/tmp/demo [--config.x=y ...]

Restarting the same command resumes from the latest checkpoint in --workdir. Ctrl-C (or SIGTERM)
saves at the next step boundary and exits; a second Ctrl-C aborts without saving.
`--config.loss.name=X` builds the config with loss X's defaults and recipe, as the config argument
`--config=FILE:X` does; X's own fields then take overrides (`--config.loss.<field>=...`).

Several processes (multi-host): run the same command on every host with --distributed (TPU pods
and SLURM allocations are detected by jax.distributed), or name the coordinator explicitly:
--coordinator=HOST:PORT --num_processes=N --process_id=I. All devices of all processes form one
mesh; each process reads its own slice of every global batch; process 0 logs.
"""
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from infomax_jax import cli
from infomax_jax import losses
from infomax_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/demo.py[:arg].',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_bool('distributed', False, 'jax.distributed.initialize() with auto-detection.')
flags.DEFINE_string('coordinator', None, 'HOST:PORT of process 0 (explicit multi-process).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (with --coordinator).')
flags.DEFINE_integer('process_id', None, 'Index of this process (with --coordinator).')
flags.mark_flags_as_required(['config', 'workdir'])


def initialize_distributed():
  if FLAGS.coordinator:
    if FLAGS.num_processes is None or FLAGS.process_id is None:
      raise ValueError('--coordinator needs --num_processes and --process_id')
    # CPU processes exchange collectives through gloo; GPU and TPU use their own transports.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  elif FLAGS.distributed:
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.ERROR)
  train.workdir_path(FLAGS.workdir)   # a malformed bucket URI fails here, before any loading
  initialize_distributed()
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run():
  # The config flag reads its overrides from sys.argv itself.
  sys.argv = cli.loss_in_config_argument(sys.argv, losses.names())
  cli.run(main)


if __name__ == '__main__':
  run()
