"""infomax_jax: self-supervised learning by information maximisation in JAX/Flax.

On CPU the package turns off XLA's YNNPACK library fusions for dots and convolutions
(`--xla_cpu_experimental_ynn_fusion_type=`), unless XLA_FLAGS already sets that flag: the
ResNet-18 training step is 1.23× faster without them on the AVX-512 machines measured
(docs/performance.md). The flag only affects the CPU backend, and only if this package is
imported before JAX initialises its backends.
"""
import os

_YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type='
if 'xla_cpu_experimental_ynn_fusion_type' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {_YNN_FLAG}'.strip()
