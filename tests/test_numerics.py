"""Numerical robustness (docs/reliability.md): the log-det in float32 at eps = 1e-8 against float64
on the spectrum of a trained demo checkpoint and on synthetic ill-conditioned and rank-deficient
spectra, P ∈ {64, 256, 1024}; the projector's L2 normalisation at a zero row."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.numerics

from infomax_jax import models
from infomax_jax.losses import linalg

EPS = 1e-8
DEMO_SPECTRUM = os.path.join(os.path.dirname(__file__), 'data', 'demo_R1_eigenvalues.npy')


def _spectra():
  demo = np.load(DEMO_SPECTRUM)   # R1 of configs/demo.py after 300 steps (P = 64)
  cases = [('demo-checkpoint', demo)]
  for p in (64, 256, 1024):
    cases.append((f'log-spaced-{p}', np.logspace(-1, -8, p)))     # condition 1e7
    rank_deficient = np.zeros(p)
    rank_deficient[:p // 4] = np.logspace(-1, -4, p // 4)          # N < P: 3/4 of it is eps
    cases.append((f'rank-deficient-{p}', rank_deficient))
  return cases


@pytest.mark.parametrize('name,spectrum', _spectra(), ids=[n for n, _ in _spectra()])
def test_float32_logdet_matches_float64(name, spectrum):
  rng = np.random.default_rng(len(spectrum))
  q, _ = np.linalg.qr(rng.normal(size=(len(spectrum), len(spectrum))))
  m64 = (q * spectrum) @ q.T
  exact = np.linalg.slogdet(m64 + EPS * np.eye(len(spectrum)))
  assert exact.sign > 0
  m32 = linalg.add_eps(jax.numpy.asarray(m64, np.float32), EPS)
  value, grad = jax.jit(jax.value_and_grad(linalg.logdet_cholesky))(m32)
  assert np.isfinite(value) and np.all(np.isfinite(grad)), name
  relative = abs(float(value) - exact.logabsdet) / abs(exact.logabsdet)
  # Measured (largest over P): demo 1.3e-7; condition 1e7: 6.2e-5 here (AMD EPYC, default and
  # --xla_cpu_max_isa=AVX2 alike), 1.0e-4 on a Xeon with AMX; rank-deficient: 1.7e-3 — float32
  # matrices carry rounding of ~1e-8·‖M‖ in the null space, the size of eps itself. Bounds ≥ 10×
  # the largest measured value (docs/reliability.md). The gradient is finite in every case.
  tolerance = {'demo': 1e-5, 'log': 1e-3, 'rank': 2e-2}[name.split('-')[0]]
  assert relative <= tolerance, (name, relative)


def test_l2_normalised_projector_has_finite_gradient_at_a_zero_row():
  """An image whose hidden ReLUs are all off gives a zero projector row: its normalised output is
  0 and every gradient stays finite (jnp.linalg.norm's gradient at 0 is NaN)."""
  projector = models.Projector(dims=(8, 4))
  x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
  x[0] = 0.0
  params = projector.init(jax.random.key(0), x, train=True)['params']
  params['Dense_0']['bias'] = np.full(8, -0.01, np.float32)   # every hidden ReLU of row 0 is off

  def loss(p):
    return jnp.sum(projector.apply({'params': p}, x, train=True) * jnp.arange(4.0))

  z = projector.apply({'params': params}, x, train=True)
  grads = jax.grad(loss)(params)
  np.testing.assert_array_equal(z[0], 0.0)
  np.testing.assert_allclose(np.linalg.norm(z[1:], axis=1), 1.0, rtol=1e-6)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
