"""Where the JAX training step's time goes on this CPU: a per-HLO-instruction profile.

    python benchmarks/step_profile.py [--batch 64] [--dtype float32] [--loss corinfomax]
        [--steps 3] [--top 12] [--out benchmarks/results/step_profile.json]

Runs the step of benchmarks/step_throughput.py (ResNet-18 CIFAR stem + projector 2048-2048-64,
the project's compiled `train_step`) under `jax.profiler.trace`, reads the trace back with
`jax.profiler.ProfileData` and sums the time of every XLA instruction (thunk) over all threads
(the caller's and the runtime's workers). Each instruction is classed by what the compiled HLO
says it computes:

  conv …       a convolution, or a fusion containing one (XLA:CPU's YNNPACK fusions carry an
               elementwise epilogue along): the forward pass, the input gradient, or the weight
               gradient (a backward convolution whose output is kernel-shaped, [c, k, k, c'])
  matmul       a dot, or a fusion containing one (projector, loss)
  transpose    a fusion whose root is a layout transpose/copy (feeding the weight-gradient
               convolutions, which XLA:CPU computes with batch and channels swapped)
  reduction    a fusion containing a reduce (BatchNorm statistics, their gradients)
  elementwise  everything else (BatchNorm normalisation, ReLU, residual adds, the optimizer)

Thread time is summed over the threads, so it exceeds the wall time of the step. XLA_FLAGS
apply as usual, but with --xla_cpu_experimental_ynn_fusion_type= (YNNPACK off) the convolution
thunks leave no trace events, so only XLA's default emitters give a complete profile.
"""
import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

from benchmarks import report
from benchmarks import step_throughput

CLASSES = ('conv forward', 'conv input gradient', 'conv weight gradient', 'matmul', 'transpose',
           'reduction', 'elementwise')


def instructions(hlo_text):
  """name → (its HLO line, the text of the computation it calls, if any)."""
  computations = {}
  for match in re.finditer(r'^(%[\w.\-]+) .*?\{\n(.*?)\n\}', hlo_text, re.M | re.S):
    computations[match.group(1)] = match.group(2)
  lines = {}
  for match in re.finditer(r'^\s*(?:ROOT )?%([\w.\-]+) = (.*)$', hlo_text, re.M):
    called = re.search(r'calls=(%[\w.\-]+)', match.group(2))
    lines[match.group(1)] = (match.group(2), computations.get(called.group(1), '')
                             if called else '')
  return lines


def classify(line, body):
  text = line + '\n' + body
  if 'convolution(' in text:
    if 'transpose(jvp' not in op_name(text):
      return 'conv forward'
    dims = re.match(r'\w+\[(\d+),(\d+),(\d+),(\d+)\]', line)
    kernel = dims and dims.group(2) == dims.group(3) and int(dims.group(2)) <= 3
    return 'conv weight gradient' if kernel else 'conv input gradient'
  if ' dot(' in text:
    return 'matmul'
  root = re.search(r'ROOT %[\w.\-]+ = \S+ (\w[\w-]*)\(', body)
  if (root and root.group(1) in ('copy', 'transpose')) and ' transpose(' in text:
    return 'transpose'
  if ' reduce(' in text or ' reduce-window(' in text:
    return 'reduction'
  return 'elementwise'


def op_name(line):
  match = re.search(r'op_name="([^"]*)"', line)
  return match.group(1) if match else ''


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--loss', default='corinfomax')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--top', type=int, default=12)
  parser.add_argument('--out', default='benchmarks/results/step_profile.json')
  args = parser.parse_args()
  config = step_throughput.step_config(args, args.batch, args.dtype)
  step, state, flops = step_throughput.jax_setup(config, args.batch)
  images = np.random.default_rng(0).normal(size=(2, args.batch, 32, 32, 3)).astype(np.float32)
  batch = {'view1': images[0], 'view2': images[1]}
  for _ in range(2):
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics['loss'])
  with tempfile.TemporaryDirectory() as trace_dir:
    start = time.perf_counter()
    with jax.profiler.trace(trace_dir):
      for _ in range(args.steps):
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics['loss'])
    wall = (time.perf_counter() - start) / args.steps
    trace = glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True)[0]
    profile = jax.profiler.ProfileData.from_file(trace)
    seconds = collections.Counter()
    for plane in profile.planes:
      for line in plane.lines:
        for event in line.events:
          seconds[event.name] += event.duration_ns / 1e9 / args.steps
  hlo = instructions(step.as_text())
  per_class, ops = collections.Counter(), []
  for name, s in seconds.items():
    if name not in hlo:   # runtime bookkeeping (executor, waits), not an instruction
      continue
    line, body = hlo[name]
    kind = classify(line, body)
    per_class[kind] += s
    ops.append({'instruction': name, 'class': kind, 'seconds': s,
                'op_name': op_name(line) or op_name(body),
                'shape': line.split(' ')[0]})
  total = sum(per_class.values())
  ops.sort(key=lambda op: -op['seconds'])
  results = {
      'command': 'python ' + ' '.join(sys.argv), 'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'batch_pairs': args.batch, 'dtype': args.dtype, 'step_gflop': flops / 1e9,
      'wall_seconds_per_step_traced': wall, 'thread_seconds_per_step': total,
      'classes': {k: {'seconds': per_class[k], 'share': per_class[k] / total} for k in CLASSES},
      'top': ops[:args.top], 'instructions_timed': len(ops),
  }
  print(f'{args.batch} pairs {args.dtype}, XLA_FLAGS={results["xla_flags"]!r}: '
        f'{wall:.3f} s per traced step, {total:.3f} s of XLA instructions over the threads')
  for kind in CLASSES:
    print(f'  {kind:21s} {per_class[kind]:7.3f} s  {100 * per_class[kind] / total:5.1f} %')
  print('largest instructions:')
  for op in ops[:args.top]:
    print(f'  {op["seconds"] * 1e3:7.1f} ms  {op["class"]:21s} {op["shape"]:24s} '
          f'{op["op_name"][:64]}')
  report.write_json(args.out, results)


if __name__ == '__main__':
  main()
