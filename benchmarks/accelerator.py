"""The training step on whatever backend JAX finds (GPU, TPU or CPU), at the thesis sizes.

    python benchmarks/accelerator.py [--out benchmarks/results/accelerator_<device>.json]
        [--steps 20] [--r18_batch 512] [--r50_batch 256] [--dtypes float32 bfloat16]
    python benchmarks/accelerator.py --smoke      # tiny sizes: checks the command on a CPU

Needs jax, flax, optax and orbax only (no TensorFlow): batches are random views generated on the
devices. For each case (ResNet-18 with the CIFAR stem at 32 px and the CIFAR-10 config,
ResNet-50 at 224 px and the ImageNet-100 config; CorInfoMax) and compute dtype:

- step time (median of `--steps` timed steps after 2 warm-up steps) and images/s per chip, an
  image being one training example (two views);
- model FLOPs per step and chip from XLA's cost analysis of the compiled step, and MFU against
  the chip's peak (PEAK_TFLOPS; on chips not in the table, against a measured matmul peak);
- the loss's share of the step: the loss's value-and-gradient with respect to the embeddings,
  timed alone at the same batch and projector size;
- peak device memory where the backend reports it (the process's peak so far: cases run in
  the order of the table, so a row's figure covers the rows above it).

Then the Cholesky and Taylor (EMI's order) log-det, value and gradient, at P = 512, 1024, 2048.
Figures are printed as Markdown tables and written as JSON (docs/performance.md).
"""
import argparse
import datetime
import functools
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
from configs import imagenet100
from infomax_jax import losses
from infomax_jax import models
from infomax_jax import train
from infomax_jax.losses import linalg

# Dense peak TFLOP/s per chip (vendor data sheets), (float32, bfloat16). float32 is the rate JAX's
# default matmul precision runs at: TF32 tensor cores on NVIDIA Ampere and Hopper, bf16 passes on
# TPUs. Matched against jax.Device.device_kind in this order (the first substring that occurs).
PEAK_TFLOPS = (
    ('H200', (494.7, 989.4)),          # H200 SXM
    ('H100 PCIe', (378.0, 756.0)),
    ('H100', (494.7, 989.4)),          # H100 SXM
    ('A100', (156.0, 312.0)),
    ('TPU v4', (275.0, 275.0)),
    ('TPU v5 lite', (197.0, 197.0)),   # v5e
    ('TPU v5e', (197.0, 197.0)),
    ('TPU v5', (459.0, 459.0)),        # v5p
    ('TPU v6 lite', (918.0, 918.0)),   # v6e (Trillium)
)
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def table_peak(device_kind, dtype):
  for name, peaks in PEAK_TFLOPS:
    if name in device_kind:
      return peaks[0 if dtype == 'float32' else 1] * 1e12
  return None


def measured_matmul_peak(dtype, size, repeats):
  """FLOP/s of a jitted size³ matmul in `dtype`: the peak where the chip is not in the table."""
  a = jax.random.normal(jax.random.key(0), (size, size), DTYPES[dtype])
  matmul = jax.jit(lambda x: x @ x)
  return 2 * size**3 / report.median_seconds(matmul, (a,), 2, repeats)


def case_config(case, dtype, batch, smoke):
  if case == 'r18-cifar-32':
    config = cifar10.get_config('corinfomax')
  else:
    config = imagenet100.get_config('r50,corinfomax')
  config.compute_dtype = dtype
  config.batch_size = batch
  config.total_steps = 10**6
  config.diagnostics_every_steps = 10**9   # the collapse diagnostics run only at log steps
  if smoke:
    config.model.width = 0.125
    config.projector.dims = (64, 64, 32)
    config.data.image_size = 16 if case == 'r18-cifar-32' else 32
  return config


def time_step(config, steps, loss_repeats):
  devices = jax.device_count()
  mesh = train.make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(train.DATA_AXIS))
  model = models.build_model(config)
  tx = train.make_optimizer(config, num_train=10**6)
  state = jax.jit(functools.partial(train.create_train_state, config, model, tx),
                  out_shardings=replicated)(jax.random.key(0))
  size = config.data.image_size
  shape = (config.batch_size, size, size, 3)
  batch = jax.jit(lambda key: {'view1': jax.random.normal(key, shape),
                               'view2': jax.random.normal(jax.random.fold_in(key, 1), shape)},
                  out_shardings=sharded)(jax.random.key(1))
  compiled = train.compile_train_step(config, model, tx, mesh, num_steps=10**6).lower(
      state, batch).compile()
  # XLA's cost analysis of the partitioned (SPMD) program: one chip's share of the step.
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops_per_chip = float(cost.get('flops', 0.0)) if cost else 0.0

  for _ in range(2):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  step_seconds = statistics.median(times)

  module = losses.get(config.loss.name)
  dim = config.projector.dims[-1]
  keys = jax.random.split(jax.random.key(2), 4)
  views = {name: jax.device_put(jax.random.normal(k, (config.batch_size, dim)), sharded)
           for name, k in zip(('z1', 'z2', 't1', 't2'), keys)}
  views = jax.tree.map(lambda z: z / linalg.row_norms(z), views)
  loss_grad = jax.jit(jax.value_and_grad(
      lambda v, s: module.loss_fn(v, s, config.loss)[0]))
  loss_seconds = report.median_seconds(
      loss_grad, (views, module.init_state(dim, config.loss)), 2, loss_repeats)
  memory = jax.devices()[0].memory_stats() or {}
  return {'step_seconds': step_seconds, 'all_step_seconds': times,
          'images_per_second_per_chip': config.batch_size / step_seconds / devices,
          'flops_per_step_per_chip': flops_per_chip, 'loss_seconds': loss_seconds,
          'loss_share': loss_seconds / step_seconds,
          'peak_memory_bytes': memory.get('peak_bytes_in_use')}


def time_logdets(dims, order, repeats):
  results = {}
  for dim in dims:
    x = np.random.default_rng(dim).normal(size=(4 * dim, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    m = jnp.asarray(x.T @ x / len(x) + 1e-8 * np.eye(dim), jnp.float32)
    scale = 1.05 * float(np.linalg.eigvalsh(np.asarray(m, np.float64))[-1])
    cholesky = jax.jit(jax.value_and_grad(linalg.logdet_cholesky))
    taylor = jax.jit(jax.value_and_grad(
        functools.partial(linalg.logdet_taylor, scale=scale, order=order)))
    c = report.median_seconds(cholesky, (m,), 2, repeats)
    t = report.median_seconds(taylor, (m,), 2, repeats)
    results[dim] = {'cholesky_seconds': c, 'taylor_seconds': t, 'taylor_over_cholesky': t / c}
  return results


def markdown(results):
  lines = ['| case | dtype | batch/chip | step ms | img/s/chip | TFLOP/step/chip | MFU | '
           'loss share | peak memory GiB |', '|---|---|---|---|---|---|---|---|---|']
  for row in results['steps']:
    memory = row['peak_memory_bytes']
    lines.append(
        f"| {row['case']} | {row['dtype']} | {row['batch_per_chip']} | "
        f"{1e3 * row['step_seconds']:.1f} | {row['images_per_second_per_chip']:.3g} | "
        f"{row['flops_per_step_per_chip'] / 1e12:.3f} | {100 * row['mfu']:.1f} % "
        f"({row['peak_source']}) | {100 * row['loss_share']:.2g} % | "
        f"{'n/a' if memory is None else f'{memory / 2**30:.2f}'} |")
  lines += ['', f"| P | Cholesky ms | Taylor (order {results['taylor_order']}) ms | "
            'Taylor / Cholesky |', '|---|---|---|---|']
  for dim, row in results['logdet'].items():
    lines.append(f"| {dim} | {1e3 * row['cholesky_seconds']:.2f} | "
                 f"{1e3 * row['taylor_seconds']:.2f} | {row['taylor_over_cholesky']:.2f} |")
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--smoke', action='store_true',
                      help='tiny widths, sizes and repeats: checks the command (CPU, tests)')
  parser.add_argument('--steps', type=int, default=20, help='timed steps per case')
  parser.add_argument('--r18_batch', type=int, default=512, help='pairs per chip, ResNet-18')
  parser.add_argument('--r50_batch', type=int, default=256, help='pairs per chip, ResNet-50')
  parser.add_argument('--dtypes', nargs='+', default=list(DTYPES), choices=list(DTYPES))
  parser.add_argument('--logdet_dims', type=int, nargs='+', default=[512, 1024, 2048])
  parser.add_argument('--out', default=None,
                      help='JSON path (default benchmarks/results/accelerator_<device>.json)')
  args = parser.parse_args()
  if args.smoke:
    args.steps, args.r18_batch, args.r50_batch, args.logdet_dims = 2, 2, 2, [32, 64]
  device = jax.devices()[0]
  kind = device.device_kind
  devices = jax.device_count()
  order = losses.default_config('emi').order
  results = {'device_kind': kind, 'platform': device.platform, 'devices': devices,
             'jax_version': jax.__version__, 'smoke': args.smoke,
             'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
             'command': ' '.join(sys.argv), 'taylor_order': order, 'steps': []}
  print(f'{devices} × {kind} ({device.platform}), jax {jax.__version__}', flush=True)
  for case, per_chip in (('r18-cifar-32', args.r18_batch), ('r50-imagenet-224', args.r50_batch)):
    for dtype in args.dtypes:
      config = case_config(case, dtype, per_chip * devices, args.smoke)
      row = time_step(config, args.steps, loss_repeats=max(args.steps, 3))
      peak = table_peak(kind, dtype)
      source = 'data sheet'
      if peak is None:
        peak = measured_matmul_peak(dtype, 256 if args.smoke else 4096, 5)
        source = 'measured matmul'
      row.update(case=case, dtype=dtype, batch_per_chip=per_chip,
                 image_size=config.data.image_size, model=config.model.name,
                 width=config.model.width, projector=list(config.projector.dims),
                 peak_flops=peak, peak_source=source,
                 mfu=row['flops_per_step_per_chip'] / row['step_seconds'] / peak)
      results['steps'].append(row)
      print(f"{case} {dtype}: {1e3 * row['step_seconds']:.1f} ms/step, "
            f"{row['images_per_second_per_chip']:.0f} img/s/chip, MFU {100 * row['mfu']:.1f} %",
            flush=True)
  results['logdet'] = time_logdets(args.logdet_dims, order, 3 if args.smoke else 20)
  print(markdown(results), flush=True)
  name = ''.join(c if c.isalnum() else '_' for c in kind.lower()).strip('_')
  report.write_json(args.out or os.path.join(
      os.path.dirname(os.path.abspath(__file__)), 'results',
      f"accelerator_{name}{'_smoke' if args.smoke else ''}.json"), results)


if __name__ == '__main__':
  main()
