"""What the command-line entry points (main, probe, plots, show_augmentations) share: flag errors
and user errors as one line, the loss swap by config flag, and quiet third-party start-up."""
import contextlib
import os
import sys

from absl import app
from absl import flags
from absl import logging

# A bad config, missing data or a diverged run: the user's to fix, reported without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError)


@contextlib.contextmanager
def native_stderr_silenced():
  """Sends what C++ libraries write to file descriptor 2 to /dev/null (INFOMAX_VERBOSE=1 keeps it):
  TensorFlow prints its start-up banner twice at import, before any of its log settings apply."""
  if os.environ.get('INFOMAX_VERBOSE'):
    yield
    return
  sys.stderr.flush()
  saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(null)


def import_tensorflow_quietly():
  """Imports TensorFlow (when installed) for the input pipeline: without its banner (a later
  import is then silent), without the accelerators (they are JAX's), and with one intra-op
  thread, since tf.data already runs map calls in parallel and the XLA-compiled augmentations
  would otherwise oversubscribe the cores (224-px views: +25 % img/s on 2 cores,
  benchmarks/input_pipeline.py)."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  with native_stderr_silenced():
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
    except ImportError:
      return
    try:
      tf.config.set_visible_devices([], 'GPU')
      tf.config.set_visible_devices([], 'TPU')
      tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:   # TensorFlow ran an op before this import
      logging.warning('TensorFlow was initialised before infomax_jax: its devices and intra-op '
                      'threads stay as they are')


def _flag_values(argv, name):
  """[(index, value)] of `--name=value` and `--name value` in argv."""
  found = []
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      found.append((i, arg.split('=', 1)[1]))
    elif arg == f'--{name}' and i + 1 < len(argv):
      found.append((i + 1, argv[i + 1]))
  return found


def overridden_fields(argv, name):
  """Dotted paths of the fields below config flag `name` that argv sets (`--name.a.b=v`)."""
  prefix = f'--{name}.'
  return [arg[len(prefix):].split('=')[0] for arg in argv if arg.startswith(prefix)]


def loss_in_config_argument(argv, loss_names):
  """argv with `--config.loss.name=X` moved into the config argument (`--config=FILE:...,X`).

  Every experiment config takes the loss as a word of its argument and builds the loss's own
  defaults and recipe from it; a bare `loss.name` override would keep the previous loss's fields.
  Other words of the argument (the architecture) are kept; the override itself stays, a no-op.
  """
  swaps = _flag_values(argv, 'config.loss.name')
  configs = _flag_values(argv, 'config')
  if not swaps or not configs:
    return list(argv)
  loss = swaps[-1][1]
  index, value = configs[-1]
  path, _, arg = value.partition(':')
  words = [w for w in arg.split(',') if w.strip() and w.strip() not in loss_names]
  argv = list(argv)
  new_value = f'{path}:{",".join(words + [loss])}'
  argv[index] = f'--config={new_value}' if argv[index].startswith('--config=') else new_value
  return argv


def _one_line(error):
  """The message of a flag-parsing error in one line (a config file's traceback: its last line)."""
  if isinstance(error, KeyError) and error.args:
    lines = str(error.args[0]).splitlines()
    return f'unknown config field in an override: {"; ".join(lines)}'
  text = str(error)
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  if 'Traceback (most recent call last)' in text:
    flag = lines[0].split(': Error whilst')[0]
    cause = lines[-1].split(': ', 1)[-1]
    return f'{flag}: {cause}'
  return ' '.join(lines)


def _parse_flags(argv):
  try:
    remaining = flags.FLAGS(argv)
    if 'config' in flags.FLAGS and flags.FLAGS['config'].value is not None:
      flags.FLAGS.config.keys()   # a config file that failed to load raises only when read
    return remaining
  except OSError as e:
    raise SystemExit(f'error: --config: {str(e).splitlines()[-1].strip()}') from None
  except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
    raise SystemExit(f'error: {_one_line(e)}') from None


def run(main):
  """`app.run(main)`; flag errors and user errors become one line `error: ...` on stderr (exit
  status 1), Ctrl-C outside the training loop one line `interrupted` (exit status 130)."""
  import_tensorflow_quietly()
  try:
    app.run(main, flags_parser=_parse_flags)
  except USER_ERRORS as e:
    raise SystemExit(f'error: {e}') from None
  except KeyboardInterrupt:
    print('interrupted', file=sys.stderr, flush=True)
    raise SystemExit(130) from None
