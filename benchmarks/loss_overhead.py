"""Loss overhead: loss+gradient time of every registered loss relative to VICReg (thesis Table 5.8).

    python benchmarks/loss_overhead.py [--sizes 64 128 256 512 1024] [--batch 512] [--repeats 20]
        [--out benchmarks/results/loss_overhead.json] [--full_step | --full_step_only]
        [--full_batch 512] [--full_repeats 10]

For each projector output size P: the jitted value-and-gradient (with respect to z1, z2) of every
loss at its default config, plus EMI with the exact log-det, on N random L2-normalised embeddings;
the median over `--repeats` timed calls after `--warmup` calls, reported as a ratio to VICReg
measured in the same run. Then the Taylor (orders `--orders`) and Cholesky log-det of an SPD P×P
matrix (covariance of 4P unit-norm Gaussian rows, condition ≈ 9): value+gradient time and the
Taylor relative error against a float64 slogdet, with c = 1.05·λ_max.

`--full_step` also times whole training steps (infomax_jax.train.compile_train_step, ResNet-18
CIFAR stem, projector 2048-2048-1024 without hidden BatchNorm for both, `--full_batch` image
pairs, collapse diagnostics off) of CorInfoMax and VICReg, alternating one step of each per
repeat.
"""
import argparse
import functools
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import report
from configs import cifar10
from infomax_jax import losses
from infomax_jax import models
from infomax_jax import train
from infomax_jax.losses import linalg


def methods():
  """(label, loss name, config overrides): every registered loss, plus EMI with Cholesky."""
  return [(name, name, {}) for name in losses.names()] + [('emi-exact', 'emi', {'logdet': 'exact'})]


def loss_grad_fn(name, overrides):
  module = losses.get(name)
  config = losses.default_config(name)
  config.update(overrides)

  def objective(z, rest, state):
    return module.loss_fn({**z, **rest}, state, config)[0]

  return jax.jit(jax.value_and_grad(objective)), functools.partial(module.init_state,
                                                                     config=config)


def embeddings(key, n, dim):
  keys = jax.random.split(key, 4)
  z = [jax.random.normal(k, (n, dim), jnp.float32) for k in keys]
  z = [x / linalg.row_norms(x) for x in z]
  return {'z1': z[0], 'z2': z[1]}, {'t1': z[2], 't2': z[3]}


def time_losses(dim, args):
  z, rest = embeddings(jax.random.key(dim), args.batch, dim)
  seconds = {}
  for label, name, overrides in methods():
    fn, init_state = loss_grad_fn(name, overrides)
    seconds[label] = report.median_seconds(fn, (z, rest, init_state(dim)), args.warmup,
                                           args.repeats)
  return seconds


def time_logdets(dim, args):
  x = np.random.default_rng(dim).normal(size=(4 * dim, dim))
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  x -= x.mean(0)
  m64 = x.T @ x / len(x) + 1e-8 * np.eye(dim)
  exact = np.linalg.slogdet(m64)[1]
  scale = 1.05 * np.linalg.eigvalsh(m64)[-1]
  m = jnp.asarray(m64, jnp.float32)
  cholesky = jax.jit(jax.value_and_grad(linalg.logdet_cholesky))
  result = {'cholesky_seconds': report.median_seconds(cholesky, (m,), args.warmup,
                                                     args.repeats),
            'taylor': {}}
  for order in args.orders:
    taylor = jax.jit(jax.value_and_grad(
        functools.partial(linalg.logdet_taylor, scale=scale, order=order)))
    seconds = report.median_seconds(taylor, (m,), args.warmup, args.repeats)
    value = float(taylor(m)[0])
    result['taylor'][order] = {'seconds': seconds,
                               'ratio_to_cholesky': seconds / result['cholesky_seconds'],
                               'relative_error': abs(value - exact) / abs(exact)}
  return result


def time_full_steps(args):
  """Alternating full training steps of CorInfoMax and VICReg at P = 1024."""
  mesh = train.make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(train.DATA_AXIS))
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, args.full_batch, 32, 32, 3)).astype(np.float32)
  batch = train.global_batch({'view1': images[0], 'view2': images[1]}, sharded)
  steps, states = {}, {}
  for name in ('corinfomax', 'vicreg'):
    config = cifar10.get_config(name)
    config.model.width = args.width
    config.projector.dims = (2048, 2048, 1024)
    config.projector.hidden_batchnorm = False   # the same network for both (thesis Table 5.8)
    config.batch_size = args.full_batch
    config.diagnostics_every_steps = 10**9
    model = models.build_model(config)
    tx = train.make_optimizer(config, 50000)
    states[name] = jax.jit(functools.partial(train.create_train_state, config, model, tx),
                           out_shardings=replicated)(jax.random.key(0))
    steps[name] = train.compile_train_step(config, model, tx, mesh, num_steps=10**6)
  times = {name: [] for name in steps}
  for repeat in range(args.warmup + args.full_repeats):
    for name in steps:
      start = time.perf_counter()
      states[name], metrics = steps[name](states[name], batch)
      jax.block_until_ready(metrics)
      if repeat >= args.warmup:
        times[name].append(time.perf_counter() - start)
  seconds = {name: statistics.median(t) for name, t in times.items()}
  return {'batch': args.full_batch, 'width': args.width, 'projector': [2048, 2048, 1024],
          'repeats': args.full_repeats, 'seconds': seconds, 'all_seconds': times,
          'corinfomax_over_vicreg': seconds['corinfomax'] / seconds['vicreg']}


def print_full_step(full):
  print(f'\nfull training step, ResNet-18 width {full["width"]}, batch {full["batch"]}, P=1024: '
        f'corinfomax {1e3 * full["seconds"]["corinfomax"]:.1f} ms, '
        f'vicreg {1e3 * full["seconds"]["vicreg"]:.1f} ms, '
        f'ratio {full["corinfomax_over_vicreg"]:.3f}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[64, 128, 256, 512, 1024])
  parser.add_argument('--batch', type=int, default=512)
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--orders', type=int, nargs='+', default=[4, 8, 16])
  parser.add_argument('--out', default='benchmarks/results/loss_overhead.json')
  parser.add_argument('--full_step', action='store_true')
  parser.add_argument('--full_batch', type=int, default=32)
  parser.add_argument('--full_repeats', type=int, default=10)
  parser.add_argument('--width', type=float, default=1.0)
  parser.add_argument('--full_step_only', action='store_true',
                      help='only the full steps, merged into the existing --out file')
  args = parser.parse_args()
  if args.full_step_only:
    with open(args.out) as f:
      results = json.load(f)
    results['full_step'] = time_full_steps(args)
    results['full_step']['command'] = 'python ' + ' '.join(sys.argv)
    print_full_step(results['full_step'])
    report.write_json(args.out, results)
    return

  results = {'device': str(jax.devices()[0].device_kind), 'device_count': jax.device_count(),
             'command': 'python ' + ' '.join(sys.argv),
             'batch': args.batch, 'repeats': args.repeats, 'sizes': args.sizes,
             'loss_grad_seconds': {}, 'ratio_to_vicreg': {}, 'logdet': {}}
  labels = [label for label, _, _ in methods()]
  print(f'loss+gradient time / VICReg, N={args.batch}, median of {args.repeats} '
        f'({results["device"]} ×{results["device_count"]})')
  print(f'{"P":>6} {"vicreg ms":>10} ' + ' '.join(f'{label:>11}' for label in labels))
  for dim in args.sizes:
    seconds = time_losses(dim, args)
    ratios = {label: t / seconds['vicreg'] for label, t in seconds.items()}
    results['loss_grad_seconds'][dim] = seconds
    results['ratio_to_vicreg'][dim] = ratios
    print(f'{dim:>6} {1e3 * seconds["vicreg"]:>10.3f} '
          + ' '.join(f'{ratios[label]:>11.2f}' for label in labels), flush=True)

  print('\nlog-det value+gradient: Taylor order K vs Cholesky (time ratio, relative error)')
  print(f'{"P":>6} {"chol ms":>10} ' + ' '.join(f'{"K=" + str(k):>20}' for k in args.orders))
  for dim in args.sizes:
    entry = time_logdets(dim, args)
    results['logdet'][dim] = entry
    taylor = entry['taylor']
    print(f'{dim:>6} {1e3 * entry["cholesky_seconds"]:>10.3f} ' + ' '.join(
        f'{taylor[k]["ratio_to_cholesky"]:>9.2f}× {taylor[k]["relative_error"]:>9.1e}'
        for k in args.orders), flush=True)

  if args.full_step:
    results['full_step'] = time_full_steps(args)
    print_full_step(results['full_step'])

  report.write_json(args.out, results)


if __name__ == '__main__':
  main()
