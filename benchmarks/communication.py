"""Bytes each training step communicates, read from the compiled program (scale-out docs).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/communication.py \
        [--losses corinfomax vicreg] [--dims 64 1024] [--batch 512] [--out ...json]

Compiles the real sharded train step (ResNet-18 CIFAR, projector 2048-2048-P, global batch
`--batch` over all devices) and sums, per collective kind, the bytes of the results of every
all-reduce / all-gather / reduce-scatter / all-to-all / collective-permute in the optimised HLO
(for an all-reduce, the payload each device contributes per step; a ring all-reduce moves about
twice that over each device's links; an all-gather's result is the gathered whole). Compared with the parameter count, which the gradient all-reduce carries.
"""
import argparse
import collections
import functools
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import report
from configs import cifar10
from infomax_jax import models
from infomax_jax import train

BYTES = {'f32': 4, 'bf16': 2, 'f16': 2, 's32': 4, 'u32': 4, 'pred': 1, 'f64': 8, 's64': 8,
         'u8': 1, 's8': 1}
COLLECTIVE = re.compile(   # `%name = <result shape or tuple of shapes> all-reduce(...`
    r'^\s*(?:ROOT\s+)?%?[\w.-]+\s*=\s*(.+?)\s+'
    r'(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(?:-start)?\(')
SHAPE = re.compile(r'\b(f32|bf16|f16|s32|u32|pred|f64|s64|u8|s8)\[([0-9,]*)\]')


def shape_bytes(text):
  total = 0
  for dtype, dims in SHAPE.findall(text):
    total += BYTES[dtype] * int(np.prod([int(d) for d in dims.split(',') if d] or [1]))
  return total


def collective_bytes(hlo):
  """{kind: (count, bytes of the results)} over the optimised HLO of one step."""
  summary = collections.defaultdict(lambda: [0, 0])
  for line in hlo.splitlines():
    match = COLLECTIVE.search(line)
    if match:
      summary[match.group(2)][0] += 1
      summary[match.group(2)][1] += shape_bytes(match.group(1))
  return {kind: {'count': c, 'bytes': b} for kind, (c, b) in summary.items()}


def step_collectives(loss, dim, args):
  config = cifar10.get_config(loss)
  config.projector.dims = (2048, 2048, dim)
  config.batch_size = args.batch
  config.diagnostics_every_steps = 10**9
  config.compute_dtype = args.compute_dtype
  model = models.build_model(config)
  tx = train.make_optimizer(config, 50000)
  mesh = train.make_mesh()
  state = jax.eval_shape(functools.partial(train.create_train_state, config, model, tx),
                         jax.random.key(0))
  batch = {name: jax.ShapeDtypeStruct((args.batch, 32, 32, 3), jnp.float32)
           for name in ('view1', 'view2')}
  compiled = train.compile_train_step(config, model, tx, mesh, 10**6).lower(state, batch).compile()
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  return {'params': params, 'param_bytes': 4 * params,
          'collectives': collective_bytes(compiled.as_text())}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--losses', nargs='+', default=['corinfomax', 'vicreg'])
  parser.add_argument('--dims', type=int, nargs='+', default=[64, 1024])
  parser.add_argument('--batch', type=int, default=512)
  parser.add_argument('--compute_dtype', default='float32')
  parser.add_argument('--out', default='benchmarks/results/communication.json')
  args = parser.parse_args()
  if jax.device_count() == 1:
    raise SystemExit('error: one device: collectives need several; on a CPU simulate 8 with '
                     'XLA_FLAGS=--xla_force_host_platform_device_count=8')
  results = {'devices': jax.device_count(), 'batch': args.batch, 'runs': {}}
  print(f'{jax.device_count()} devices, global batch {args.batch}: bytes per device per step')
  for loss in args.losses:
    for dim in args.dims:
      entry = step_collectives(loss, dim, args)
      results['runs'][f'{loss}/P={dim}'] = entry
      parts = ', '.join(f'{k} {v["count"]}× {v["bytes"] / 2**20:.2f} MiB'
                        for k, v in sorted(entry['collectives'].items()))
      print(f'{loss:>11} P={dim:<5} params {entry["param_bytes"] / 2**20:.1f} MiB | {parts}',
            flush=True)
  report.write_json(args.out, results)


if __name__ == '__main__':
  main()
