"""What the benchmarks share: timing a jitted call, and writing the figures as JSON (`--out`)."""
import importlib
import json
import os
import statistics
import time

import jax


def import_or_exit(name):
  """The module `name`, or a one-line exit naming the file that installs it."""
  try:
    return importlib.import_module(name)
  except ImportError:
    raise SystemExit(f'error: this benchmark needs {name}, which requirements.txt leaves out: '
                     'pip install -r requirements-bench.txt') from None


def median_seconds(fn, args, warmup, repeats):
  """Median wall time of `repeats` calls of fn(*args), each waited for, after `warmup` calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def write_json(path, results):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(results, f, indent=2)
  print(f'wrote {path}', flush=True)
