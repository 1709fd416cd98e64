"""The project's training step against an equivalent PyTorch step, on this CPU (speed issue).

    python benchmarks/step_throughput.py [--batches 64 256] [--dtypes float32 bfloat16]
        [--loss corinfomax] [--steps 10] [--warmup 2] [--threads 2]
        [--pipeline_steps 20] [--out benchmarks/results/step_throughput.json]
    python benchmarks/step_throughput.py --sweep [--batches 64]     # XLA CPU flag variants

Both steps: ResNet-18 with the CIFAR stem, projector 2048-2048-64 (ReLU, bias-free output,
L2-normalised), CorInfoMax (running covariances, Cholesky log-det), SGD momentum 0.9 with weight
decay, each view forwarded separately (per-view BatchNorm, as the official code), on the same
random 32-px batch of `--batch` image pairs. JAX runs `infomax_jax.train.compile_train_step` (the
real step: loss state, divergence guard; collapse diagnostics off). PyTorch runs in eager mode
in the default (NCHW) and the channels-last memory format. The steps alternate (JAX, torch,
torch channels-last, JAX, ...) and the median of `--steps` timed steps after `--warmup` is
reported, so machine noise hits all of them alike.

Also: the machine's measured matmul peak (float32 and bfloat16, the best of jax and torch on a
4096² product) and each step's MFU = step FLOPs (XLA's cost analysis of the JAX step, used for
both) / time / float32 peak; and, with `--pipeline_steps`, the JAX step fed by the real input
pipeline (embedded sample, augmentations in tf.data) against the same step fed a batch already in
memory, to check that the pipeline keeps up.

`--sweep` reruns the float32 comparison in one subprocess per XLA_FLAGS variant (XLA reads its
flags once per process) and tabulates each variant's JAX/PyTorch ratio, PyTorch being the common
yardstick across the processes; it writes `<out>` with `_sweep` before the extension.
"""
import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import report

torch = report.import_or_exit('torch')
F = torch.nn.functional
nn = torch.nn
from configs import cifar10
from infomax_jax import input_pipeline
from infomax_jax import models
from infomax_jax import train


# ---------------------------------------------------------------------------------------------
# PyTorch reference: the same network, loss and optimizer, written as the official code does.

class BasicBlock(nn.Module):

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.shortcut = nn.Sequential()
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                    nn.BatchNorm2d(cout))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + self.shortcut(x))


class TorchSSLModel(nn.Module):
  """ResNet-18 (CIFAR stem) + projector 512-2048-2048-P, L2-normalised output."""

  def __init__(self, dims):
    super().__init__()
    layers = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
      for block in range(2):
        layers.append(BasicBlock(cin, cout, 2 if stage > 0 and block == 0 else 1))
        cin = cout
    self.encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    projector = []
    for dim in dims[:-1]:
      projector += [nn.Linear(cin, dim), nn.ReLU()]
      cin = dim
    projector.append(nn.Linear(cin, dims[-1], bias=False))
    self.projector = nn.Sequential(*projector)

  def forward(self, x):
    return F.normalize(self.projector(self.encoder(x)), dim=1)


class TorchCorInfoMax:
  """The official CorInfoMax loss: running means/covariances per view, Cholesky log-det."""

  def __init__(self, dim, alpha, lam, eps):
    self.alpha, self.lam, self.eps = alpha, lam, eps
    self.state = [torch.zeros(dim), torch.zeros(dim), torch.eye(dim), torch.eye(dim)]
    self.eye = torch.eye(dim)

  def __call__(self, z1, z2):
    lam, n = self.lam, z1.shape[0]
    mu1 = lam * self.state[0] + (1 - lam) * z1.mean(0)
    mu2 = lam * self.state[1] + (1 - lam) * z2.mean(0)
    zc1, zc2 = z1 - mu1, z2 - mu2
    r1 = lam * self.state[2] + (1 - lam) * zc1.T @ zc1 / n
    r2 = lam * self.state[3] + (1 - lam) * zc2.T @ zc2 / n
    logdet1 = 2 * torch.log(torch.diagonal(torch.linalg.cholesky(r1 + self.eps * self.eye))).sum()
    logdet2 = 2 * torch.log(torch.diagonal(torch.linalg.cholesky(r2 + self.eps * self.eye))).sum()
    self.state = [t.detach() for t in (mu1, mu2, r1, r2)]
    return self.alpha * F.mse_loss(z1, z2) - (logdet1 + logdet2) / z1.shape[1]


def torch_step_fn(config, channels_last, bf16):
  model = TorchSSLModel(tuple(config.projector.dims))
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
  loss_fn = TorchCorInfoMax(config.projector.dims[-1], config.loss.alpha, config.loss.lam,
                            config.loss.eps)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

  def step(view1, view2):
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
      z1, z2 = model(view1), model(view2)
    loss = loss_fn(z1.float(), z2.float())
    loss.backward()
    optimizer.step()
    return loss.item()

  return step


def torch_views(images, channels_last):
  views = [torch.from_numpy(np.ascontiguousarray(v.transpose(0, 3, 1, 2))) for v in images]
  if channels_last:
    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
  return views


# ---------------------------------------------------------------------------------------------
# JAX: the project's step.

def jax_setup(config, batch_size):
  mesh = train.make_mesh(jax.devices()[:1])
  model = models.build_model(config)
  tx = train.make_optimizer(config, 50000)
  state = jax.jit(functools.partial(train.create_train_state, config, model, tx))(
      jax.random.key(0))
  spec = {name: jax.ShapeDtypeStruct((batch_size, 32, 32, 3), jnp.float32)
          for name in ('view1', 'view2')}
  compiled = train.compile_train_step(config, model, tx, mesh, 10**6).lower(state, spec).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return compiled, state, float(cost['flops'])


def step_config(args, batch_size, dtype):
  config = cifar10.get_config(args.loss)
  config.batch_size = batch_size
  config.projector.dims = (2048, 2048, 64)
  config.diagnostics_every_steps = 10**9
  config.compute_dtype = dtype
  return config


def matmul_peak(dtype, size=4096, repeats=5):
  """GFLOP/s of a size² × size² product: the best of jax and torch."""
  flops = 2 * size**3
  a = jnp.ones((size, size), jnp.dtype(dtype))
  product = jax.jit(lambda x: x @ x)
  jax.block_until_ready(product(a))
  t = torch.ones(size, size, dtype=getattr(torch, dtype))
  torch.mm(t, t)
  best = {}
  for name, fn in (('jax', lambda: jax.block_until_ready(product(a))),
                   ('torch', lambda: torch.mm(t, t))):
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      fn()
      times.append(time.perf_counter() - start)
    best[name] = flops / min(times) / 1e9
  return best


def compare(args, batch_size, dtype, peak):
  config = step_config(args, batch_size, dtype)
  bf16 = dtype == 'bfloat16'
  jax_step, state, flops = jax_setup(config, batch_size)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, batch_size, 32, 32, 3)).astype(np.float32)
  jax_batch = {'view1': images[0], 'view2': images[1]}
  torch.manual_seed(0)
  runners = {'jax': None}
  torch_inputs = {}
  for layout, channels_last in (('torch', False), ('torch_channels_last', True)):
    runners[layout] = torch_step_fn(config, channels_last, bf16)
    torch_inputs[layout] = torch_views(images, channels_last)
  times = {name: [] for name in runners}
  for i in range(args.warmup + args.steps):
    for name in runners:
      start = time.perf_counter()
      if name == 'jax':
        state, metrics = jax_step(state, jax_batch)
        jax.block_until_ready(metrics['loss'])
      else:
        runners[name](*torch_inputs[name])
      if i >= args.warmup:
        times[name].append(time.perf_counter() - start)
  seconds = {name: statistics.median(t) for name, t in times.items()}
  best_torch = min(seconds['torch'], seconds['torch_channels_last'])
  result = {
      'batch_pairs': batch_size, 'dtype': dtype, 'step_gflop': flops / 1e9,
      'seconds': seconds, 'all_seconds': times,
      'jax_over_torch': seconds['jax'] / seconds['torch'],
      'jax_over_best_torch': seconds['jax'] / best_torch,
      'mfu_vs_float32_peak': {name: flops / s / (peak['float32'] * 1e9)
                              for name, s in seconds.items()},
      'pairs_per_second': {name: batch_size / s for name, s in seconds.items()},
  }
  print(f'batch {batch_size:>4} {dtype:>8}: jax {seconds["jax"]:.3f} s, torch '
        f'{seconds["torch"]:.3f} s, torch channels-last {seconds["torch_channels_last"]:.3f} s; '
        f'jax/torch {result["jax_over_torch"]:.2f}, jax/best torch '
        f'{result["jax_over_best_torch"]:.2f}; {flops / 1e9:.1f} GFLOP/step, MFU jax '
        f'{100 * result["mfu_vs_float32_peak"]["jax"]:.1f} %', flush=True)
  return result


def pipeline_overlap(args):
  """JAX step fed by the real tf.data pipeline vs the same step on a batch already in memory."""
  config = step_config(args, args.batches[0], 'float32')
  config.data.source = 'sample'
  examples = input_pipeline.load_split(config.data, 'train')
  jax_step, state, _ = jax_setup(config, config.batch_size)
  iterator = input_pipeline.pretrain_dataset(examples, config).as_numpy_iterator()
  cached = next(iterator)
  times = {'pipeline': [], 'in_memory': []}
  for i in range(args.warmup + args.pipeline_steps):
    for name in times:
      start = time.perf_counter()
      state, metrics = jax_step(state, next(iterator) if name == 'pipeline' else cached)
      jax.block_until_ready(metrics['loss'])
      if i >= args.warmup:
        times[name].append(time.perf_counter() - start)
  seconds = {name: statistics.median(t) for name, t in times.items()}
  result = {'batch_pairs': config.batch_size, 'seconds': seconds,
            'pipeline_over_in_memory': seconds['pipeline'] / seconds['in_memory']}
  print(f'input pipeline, batch {config.batch_size}: step fed by tf.data {seconds["pipeline"]:.3f}'
        f' s vs in memory {seconds["in_memory"]:.3f} s: '
        f'{result["pipeline_over_in_memory"]:.3f}×', flush=True)
  return result


# XLA CPU variants tried by --sweep: the default, YNNPACK (XLA's library for dots and
# convolutions) off, oneDNN on, XNNPACK off, fast math, 512-bit vectors for XLA's own loops (the
# default prefers 256) with and without YNNPACK.
FLAG_VARIANTS = {
    'default': '',
    'ynnpack_off': '--xla_cpu_experimental_ynn_fusion_type=',
    'onednn': '--xla_cpu_use_onednn=true',
    'xnnpack_off': '--xla_cpu_use_xnnpack=false',
    'fast_math': '--xla_cpu_enable_fast_math=true',
    'vector_512': '--xla_cpu_prefer_vector_width=512',
    'ynnpack_off_vector_512': '--xla_cpu_experimental_ynn_fusion_type= '
                              '--xla_cpu_prefer_vector_width=512',
}


def sweep(args):
  results = {}
  for name, flags in FLAG_VARIANTS.items():
    with tempfile.TemporaryDirectory() as folder:
      out = os.path.join(folder, 'run.json')
      command = [sys.executable, os.path.abspath(__file__), '--dtypes', 'float32', '--batches',
                 *map(str, args.batches), '--steps', str(args.steps), '--warmup',
                 str(args.warmup), '--threads', str(args.threads), '--out', out]
      env = dict(os.environ, XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') + ' ' + flags).strip())
      process = subprocess.run(command, env=env, capture_output=True, text=True)
      if process.returncode:
        results[name] = {'flags': flags, 'error': process.stderr.strip().splitlines()[-1]}
        print(f'{name:>12}: failed: {results[name]["error"]}', flush=True)
        continue
      with open(out) as f:
        runs = json.load(f)['runs']
    results[name] = {'flags': flags, 'runs': runs}
    print(f'{name:>12} ({flags or "no flags"}): ' + ', '.join(
        f'batch {r["batch_pairs"]}: jax {r["seconds"]["jax"]:.3f} s, jax/best torch '
        f'{r["jax_over_best_torch"]:.2f}' for r in runs), flush=True)
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batches', type=int, nargs='+', default=[64, 256])
  parser.add_argument('--dtypes', nargs='+', default=['float32', 'bfloat16'])
  parser.add_argument('--loss', default='corinfomax', choices=['corinfomax'])
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--pipeline_steps', type=int, default=0)
  parser.add_argument('--out', default='benchmarks/results/step_throughput.json')
  parser.add_argument('--sweep', action='store_true', help='compare XLA flag variants')
  args = parser.parse_args()
  if args.sweep:
    results = {'command': 'python ' + ' '.join(sys.argv), 'variants': sweep(args)}
    out = os.path.splitext(args.out)[0] + '_sweep.json'
    report.write_json(out, results)
    return
  torch.set_num_threads(args.threads)
  peak = {dtype: max(matmul_peak(dtype).values()) for dtype in ('float32', 'bfloat16')}
  print(f'matmul peak: float32 {peak["float32"]:.0f} GFLOP/s, bfloat16 '
        f'{peak["bfloat16"]:.0f} GFLOP/s ({args.threads} threads)', flush=True)
  results = {'command': 'python ' + ' '.join(sys.argv), 'torch': torch.__version__,
             **train.host_environment(), 'threads': args.threads, 'matmul_peak_gflops': peak,
             'runs': []}
  for dtype in args.dtypes:
    for batch_size in args.batches:
      results['runs'].append(compare(args, batch_size, dtype, peak))
  if args.pipeline_steps:
    results['pipeline'] = pipeline_overlap(args)
  report.write_json(args.out, results)


if __name__ == '__main__':
  main()
