"""Where the CPU step time goes: each convolution of ResNet-18 (CIFAR stem) and its two
gradients, XLA (jax.lax.conv_general_dilated under jit) against PyTorch (oneDNN), side by side.

    python benchmarks/conv_profile.py [--images 128] [--repeats 5] [--dtype float32|bfloat16]
        [--out benchmarks/results/conv_profile.json]

For every distinct convolution shape of the network at `--images` images per forward (64 pairs
= 128 images), times the forward product, the input gradient and the weight gradient (the three
convolutions of a training step), median of `--repeats` after a warm-up, alternating JAX and
PyTorch, and reports GFLOP/s and each layer's share of the step's convolution time, weighted by
how many times the shape occurs in the network.
"""
import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import report  # pylint: disable=g-import-not-at-top,wrong-import-position

torch = report.import_or_exit('torch')
F = torch.nn.functional

# (input channels, output channels, kernel, stride, input size, occurrences) of ResNet-18 with
# the CIFAR stem on 32-px images.
LAYERS = [
    (3, 64, 3, 1, 32, 1),
    (64, 64, 3, 1, 32, 4),
    (64, 128, 3, 2, 32, 1), (128, 128, 3, 1, 16, 3), (64, 128, 1, 2, 32, 1),
    (128, 256, 3, 2, 16, 1), (256, 256, 3, 1, 8, 3), (128, 256, 1, 2, 16, 1),
    (256, 512, 3, 2, 8, 1), (512, 512, 3, 1, 4, 3), (256, 512, 1, 2, 8, 1),
]


def median_time(fn, repeats):
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def jax_fns(cin, cout, k, stride, size, n, dtype):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(n, size, size, cin)), dtype)
  w = jnp.asarray(np.random.default_rng(1).normal(size=(k, k, cin, cout)), dtype)
  pad = 'SAME'

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), pad,
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  y, vjp = jax.vjp(conv, x, w)
  g = jnp.ones_like(y)
  forward = jax.jit(conv)
  input_grad = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
  weight_grad = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
  del vjp
  return {'forward': lambda: jax.block_until_ready(forward(x, w)),
          'input_grad': lambda: jax.block_until_ready(input_grad(x, w, g)),
          'weight_grad': lambda: jax.block_until_ready(weight_grad(x, w, g))}


def torch_fns(cin, cout, k, stride, size, n, dtype):
  dtype = getattr(torch, dtype)
  x = torch.randn(n, cin, size, size, dtype=dtype).contiguous(memory_format=torch.channels_last)
  w = torch.randn(cout, cin, k, k, dtype=dtype).contiguous(memory_format=torch.channels_last)
  padding = k // 2
  y = F.conv2d(x, w, stride=stride, padding=padding)
  g = torch.ones_like(y)
  return {
      'forward': lambda: F.conv2d(x, w, stride=stride, padding=padding),
      'input_grad': lambda: torch.nn.grad.conv2d_input(x.shape, w, g, stride=stride,
                                                       padding=padding),
      'weight_grad': lambda: torch.nn.grad.conv2d_weight(x, w.shape, g, stride=stride,
                                                         padding=padding),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--images', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  parser.add_argument('--out', default='benchmarks/results/conv_profile.json')
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  rows, totals = [], {'jax': 0.0, 'torch': 0.0}
  print(f'{"layer":>24} {"pass":>12} {"GFLOP":>7} {"jax GF/s":>9} {"torch GF/s":>10} '
        f'{"jax/torch":>9}')
  for cin, cout, k, stride, size, count in LAYERS:
    out = size // stride
    gflop = 2 * args.images * out * out * cout * cin * k * k / 1e9
    fns = {'jax': jax_fns(cin, cout, k, stride, size, args.images, args.dtype),
           'torch': torch_fns(cin, cout, k, stride, size, args.images, args.dtype)}
    for name in ('forward', 'input_grad', 'weight_grad'):
      if name == 'input_grad' and cin == 3:
        continue   # the first layer needs no input gradient
      seconds = {lib: median_time(fns[lib][name], args.repeats) for lib in fns}
      for lib in seconds:
        totals[lib] += count * seconds[lib]
      label = f'{cin}->{cout} k{k} s{stride} {size}px x{count}'
      rows.append(dict(layer=label, pass_=name, gflop=gflop, count=count, seconds=seconds))
      print(f'{label:>24} {name:>12} {gflop:7.2f} {gflop / seconds["jax"]:9.1f} '
            f'{gflop / seconds["torch"]:10.1f} {seconds["jax"] / seconds["torch"]:9.2f}',
            flush=True)
  for row in rows:
    row['share_of_jax_conv_time'] = row['count'] * row['seconds']['jax'] / totals['jax']
  print(f'convolutions of one forward+backward of {args.images} images: jax '
        f'{totals["jax"]:.3f} s, torch {totals["torch"]:.3f} s, ratio '
        f'{totals["jax"] / totals["torch"]:.2f}')
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump({'images': args.images, 'dtype': args.dtype, 'threads': args.threads,
               'totals_seconds': totals, 'rows': rows}, f, indent=2)
  print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
