"""Loss tests (LOSSES.md): baselines against float64 NumPy references of their official formulas,
the CorInfoMax, EMI and MINC properties, 1- vs 8-device agreement and degenerate inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infomax_jax import losses
from infomax_jax.losses import barlow
from infomax_jax.losses import byol
from infomax_jax.losses import corinfomax
from infomax_jax.losses import emi
from infomax_jax.losses import linalg
from infomax_jax.losses import minc
from infomax_jax.losses import mocov2
from infomax_jax.losses import simclr
from infomax_jax.losses import simsiam
from infomax_jax.losses import spectral
from infomax_jax.losses import vicreg
from infomax_jax.losses import wmse


def config_of(name, **overrides):
  config = losses.default_config(name)
  config.update(overrides)
  return config


def random_views(seed, n, dim, scale=1.0):
  rng = np.random.default_rng(seed)
  return {k: scale * rng.normal(size=(n, dim)).astype(np.float32)
          for k in ('z1', 'z2', 't1', 't2', 'p1', 'p2')}


def differentiable_views(module):
  """The inputs a loss's gradient flows through: predictions p (BYOL, SimSiam) or embeddings z."""
  return ('p1', 'p2') if hasattr(module, 'PREDICTOR_HIDDEN_DIM') else ('z1', 'z2')


def gradient_step(module, config):
  """Jitted (views, state) → (loss, d loss/d view 1, d loss/d view 2, new state, metrics), the
  gradients with respect to `differentiable_views(module)`."""
  first, second = differentiable_views(module)

  def objective(z, rest, state):
    loss, new_state, metrics = module.loss_fn({**z, **rest}, state, config)
    return loss, (new_state, metrics)

  @jax.jit
  def step(views, state):
    z = {k: views[k] for k in (first, second)}
    rest = {k: v for k, v in views.items() if k not in z}
    (loss, (new_state, metrics)), grads = jax.value_and_grad(objective, has_aux=True)(
        z, rest, state)
    return loss, grads[first], grads[second], new_state, metrics

  return step


def value_and_grad(module, config, views, state):
  return gradient_step(module, config)(views, state)


def numeric_grad(f, z1, z2, h=1e-6):
  """Central differences of the float64 scalar f(z1, z2) with respect to every entry."""
  grads = []
  for which in (0, 1):
    args = [np.array(z1, np.float64), np.array(z2, np.float64)]
    grad = np.zeros_like(args[which])
    for index in np.ndindex(grad.shape):
      plus, minus = [a.copy() for a in args], [a.copy() for a in args]
      plus[which][index] += h
      minus[which][index] -= h
      grad[index] = (f(*plus) - f(*minus)) / (2 * h)
    grads.append(grad)
  return grads


def assert_grad_close(actual, expected, rtol=1e-3):
  np.testing.assert_allclose(actual, expected, rtol=rtol,
                             atol=rtol * np.max(np.abs(expected)))


# Float64 NumPy references of the official formulas (LOSSES.md §1, §3, §4).

def np_vicreg(z1, z2):
  def terms(z):
    zc = z - z.mean(0)
    std = np.sqrt(zc.var(0, ddof=1) + 1e-4)
    cov = zc.T @ zc / (len(z) - 1)
    return np.mean(np.maximum(1 - std, 0)), (np.sum(cov**2) - np.sum(np.diag(cov)**2)) / z.shape[1]
  (s1, c1), (s2, c2) = terms(z1), terms(z2)
  return 25 * np.mean((z1 - z2)**2) + 25 * (s1 / 2 + s2 / 2) + (c1 + c2)


def np_barlow(z1, z2):
  bn = lambda z: (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
  c = bn(z1).T @ bn(z2) / len(z1)
  off = c - np.diag(np.diag(c))
  return np.sum((1 - np.diag(c))**2) + 5e-3 * np.sum(off**2)


def np_simclr(z1, z2, temperature=0.2):
  z = np.concatenate([z1, z2])
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  n = len(z1)
  sim = z @ z.T / temperature
  total = 0.0
  for i in range(2 * n):
    positive = (i + n) % (2 * n)
    others = [k for k in range(2 * n) if k != i]
    total += -sim[i, positive] + np.log(np.sum(np.exp(sim[i, others])))
  return total / (2 * n)


def np_spectral(z1, z2, mu=1.0):
  def clip(z):
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return np.where(norms < np.sqrt(mu), z, z / norms * np.sqrt(mu))
  z1, z2 = clip(z1), clip(z2)
  n = len(z1)
  part1 = -2 * np.mean(z1 * z2) * z1.shape[1]
  square = (z1 @ z2.T)**2
  part2 = np.sum(square[~np.eye(n, dtype=bool)]) / (n * (n - 1))
  return (part1 + part2) / mu


def np_corinfomax(z1, z2, state, alpha=250.0, lam=0.01, eps=1e-8):
  """Thesis Algorithm 1 step; returns (loss, cov_loss, new state)."""
  n, dim = z1.shape
  new_state, logdets = {}, []
  for q, z in (('1', z1), ('2', z2)):
    mu = lam * state['mu' + q] + (1 - lam) * z.mean(0)
    zc = z - mu
    r = lam * state['R' + q] + (1 - lam) * zc.T @ zc / n
    logdets.append(np.linalg.slogdet(r + eps * np.eye(dim))[1])
    new_state['mu' + q], new_state['R' + q] = mu, r
  cov_loss = -(logdets[0] + logdets[1]) / dim
  return alpha * np.mean((z1 - z2)**2) + cov_loss, cov_loss, new_state


def np_cosine(a, b):
  return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def np_byol(p1, p2, t1, t2):
  """BYOL eq. 2 symmetrised: Σ over the two pairings of 2 − 2·mean cos(p, t_other)."""
  return (2 - 2 * np.mean(np_cosine(p1, t2))) + (2 - 2 * np.mean(np_cosine(p2, t1)))


def np_simsiam(p1, p2, z1, z2):
  return -(np.mean(np_cosine(p1, z2)) + np.mean(np_cosine(p2, z1))) / 2


def np_mocov2(q1, q2, k1, k2, queue, temperature=0.2):
  """solo-learn mocov2plus: [CE(q1 vs k2 and queue 2) + CE(q2 vs k1 and queue 1)] / 2."""
  normalize = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  def nce(q, k, negatives):
    q, k = normalize(q), normalize(k)
    logits = np.concatenate([np.sum(q * k, 1, keepdims=True), q @ negatives.T], 1) / temperature
    return np.mean(np.log(np.sum(np.exp(logits), 1)) - logits[:, 0])
  return (nce(q1, k2, queue[1]) + nce(q2, k1, queue[0])) / 2


def np_whiten(x):
  """Official Whitening2d: (x − mean) L⁻ᵀ, L = chol(Cov with N − 1)."""
  x = x - x.mean(0)
  factor = np.linalg.cholesky(x.T @ x / (len(x) - 1))
  return x @ np.linalg.inv(factor).T


def np_wmse(z1, z2, groups):
  w1, w2 = np.zeros_like(z1), np.zeros_like(z2)
  for group in groups:
    w1[group], w2[group] = np_whiten(z1[group]), np_whiten(z2[group])
  return 2 - 2 * np.mean(np_cosine(w1, w2))


BASELINES = [(vicreg, np_vicreg, 1.0), (barlow, np_barlow, 1.0), (simclr, np_simclr, 1.0),
             (spectral, np_spectral, 0.5)]


def _f64(views, *names):
  return [np.asarray(views[k], np.float64) for k in names]


def test_byol_matches_numpy_reference():
  views = random_views(30, 12, 6)
  config = config_of('byol')
  loss, g1, g2, _, metrics = value_and_grad(byol, config, views, byol.init_state(6, config))
  p1, p2, t1, t2 = _f64(views, 'p1', 'p2', 't1', 't2')
  np.testing.assert_allclose(loss, np_byol(p1, p2, t1, t2), rtol=1e-5)
  r1, r2 = numeric_grad(lambda a, b: np_byol(a, b, t1, t2), p1, p2)
  assert_grad_close(g1, r1)
  assert_grad_close(g2, r2)
  assert np.isclose(metrics['prediction_similarity'], 1 - np_byol(p1, p2, t1, t2) / 4, rtol=1e-5)


def test_simsiam_matches_numpy_reference_and_stops_the_gradient_of_z():
  views = random_views(31, 12, 6)
  config = config_of('simsiam')
  loss, g1, g2, _, _ = value_and_grad(simsiam, config, views, simsiam.init_state(6, config))
  p1, p2, z1, z2 = _f64(views, 'p1', 'p2', 'z1', 'z2')
  np.testing.assert_allclose(loss, np_simsiam(p1, p2, z1, z2), rtol=1e-5)
  r1, r2 = numeric_grad(lambda a, b: np_simsiam(a, b, z1, z2), p1, p2)
  assert_grad_close(g1, r1)
  assert_grad_close(g2, r2)
  dz = jax.grad(lambda z: simsiam.loss_fn({**views, **z}, {}, config)[0])(
      {'z1': views['z1'], 'z2': views['z2']})
  assert not np.any(dz['z1']) and not np.any(dz['z2'])


def test_mocov2_matches_numpy_reference_and_enqueues_the_global_keys():
  views = random_views(32, 8, 6)
  config = config_of('mocov2', queue_size=24)
  state = mocov2.init_state(6, config)
  np.testing.assert_allclose(np.linalg.norm(state['queue'], axis=-1), 1.0, rtol=1e-6)
  queue = np.asarray(state['queue'], np.float64)
  step = gradient_step(mocov2, config)
  loss, g1, g2, state, _ = step(views, state)
  q1, q2, k1, k2 = _f64(views, 'z1', 'z2', 't1', 't2')
  np.testing.assert_allclose(loss, np_mocov2(q1, q2, k1, k2, queue), rtol=1e-5)
  r1, r2 = numeric_grad(lambda a, b: np_mocov2(a, b, k1, k2, queue), q1, q2)
  assert_grad_close(g1, r1)
  assert_grad_close(g2, r2)
  normalize = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  expected = queue.copy()
  expected[0, :8], expected[1, :8] = normalize(k1), normalize(k2)
  np.testing.assert_allclose(state['queue'], expected, rtol=1e-5, atol=1e-6)
  assert int(state['position']) == 8
  for _ in range(2):   # wraps around: positions 8, 16, then 0
    state = step(views, state)[3]
  assert int(state['position']) == 0


def test_mocov2_queue_size_must_be_a_multiple_of_the_batch():
  views = random_views(33, 8, 6)
  config = config_of('mocov2', queue_size=20)
  with pytest.raises(ValueError, match='queue_size=20 must be a multiple of the global batch 8'):
    mocov2.loss_fn(views, mocov2.init_state(6, config), config)


def test_wmse_matches_numpy_reference_with_the_same_sub_batches():
  views = random_views(34, 16, 3)
  views['z2'] = views['z1'] + 0.5 * views['z2']
  config = config_of('wmse', w_size=8)
  state = wmse.init_state(3, config)
  loss, g1, g2, new_state, _ = value_and_grad(wmse, config, views, state)
  _, draw = jax.random.split(jax.random.wrap_key_data(state['key']))
  groups = np.asarray(jax.random.permutation(draw, 16)).reshape(-1, 8)
  z1, z2 = _f64(views, 'z1', 'z2')
  np.testing.assert_allclose(loss, np_wmse(z1, z2, groups), rtol=1e-4)
  r1, r2 = numeric_grad(lambda a, b: np_wmse(a, b, groups), z1, z2)
  assert_grad_close(g1, r1, rtol=2e-3)
  assert_grad_close(g2, r2, rtol=2e-3)
  whitened = np.asarray(wmse.whiten(jnp.asarray(z1[:8], jnp.float32), 0.0), np.float64)
  np.testing.assert_allclose(whitened.T @ whitened / 7, np.eye(3), atol=1e-4)
  assert not np.array_equal(new_state['key'], state['key'])   # the next step draws anew


def test_wmse_sub_batch_must_divide_the_batch_and_exceed_the_embedding():
  views = random_views(35, 16, 8)
  with pytest.raises(ValueError, match='w_size=4 must divide the global batch 16 and exceed the '
                                       'embedding size 8'):
    wmse.loss_fn(views, wmse.init_state(8, config_of('wmse', w_size=4)),
                 config_of('wmse', w_size=4))


@pytest.mark.parametrize('module,reference,scale', BASELINES,
                         ids=[m.__name__.split('.')[-1] for m, _, _ in BASELINES])
def test_baseline_matches_numpy_reference(module, reference, scale):
  # scale 0.5 puts the spectral loss's rows on both sides of the clipping radius sqrt(mu) = 1.
  views = random_views(0, 12, 6, scale)
  name = module.__name__.split('.')[-1]
  config = config_of(name)
  loss, g1, g2, _, _ = value_and_grad(module, config, views, module.init_state(6, config))
  z1, z2 = views['z1'].astype(np.float64), views['z2'].astype(np.float64)
  np.testing.assert_allclose(loss, reference(z1, z2), rtol=1e-5)
  r1, r2 = numeric_grad(reference, z1, z2)
  assert_grad_close(g1, r1)
  assert_grad_close(g2, r2)


def test_solo_learn_cifar_loss_values():
  """The CIFAR recipes' loss values (CIFAR_LOSS): Barlow's scale_loss 0.1 scales the loss, and
  VICReg's std_coeff 50 is solo-learn's variance weight 25 on the *sum* of the views' hinges."""
  views = random_views(1, 12, 6, scale=0.3)   # std < 1: the variance hinges are active
  z1, z2 = _f64(views, 'z1', 'z2')
  assert barlow.CIFAR_LOSS == dict(scale_loss=0.1) and vicreg.CIFAR_LOSS == dict(std_coeff=50.0)
  value = barlow.loss_fn(views, {}, config_of('barlow', **barlow.CIFAR_LOSS))[0]
  np.testing.assert_allclose(value, 0.1 * np_barlow(z1, z2), rtol=1e-5)
  hinge = lambda z: np.mean(np.maximum(1 - np.sqrt(z.var(0, ddof=1) + 1e-4), 0))
  assert hinge(z1) > 0.1 and hinge(z2) > 0.1
  solo_learn = np_vicreg(z1, z2) + 25 * (hinge(z1) + hinge(z2)) / 2   # 25·(h1 + h2) in all
  value = vicreg.loss_fn(views, {}, config_of('vicreg', **vicreg.CIFAR_LOSS))[0]
  np.testing.assert_allclose(value, solo_learn, rtol=1e-5)


def test_corinfomax_matches_numpy_over_batches_with_state():
  """LOSSES.md §1 (a): value, gradient and state over consecutive batches."""
  n, dim = 16, 6
  config = config_of('corinfomax')
  state = corinfomax.init_state(dim, config)
  step_fn = gradient_step(corinfomax, config)
  ref_state = {'mu1': np.zeros(dim), 'mu2': np.zeros(dim), 'R1': np.eye(dim), 'R2': np.eye(dim)}
  for step in range(3):
    views = random_views(step, n, dim, 0.3)
    views['z2'] = views['z1'] + 0.1 * views['z2']
    loss, g1, g2, state, metrics = step_fn(views, state)
    z1, z2 = views['z1'].astype(np.float64), views['z2'].astype(np.float64)
    ref_loss, ref_cov_loss, next_ref_state = np_corinfomax(z1, z2, ref_state)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics['cov_loss'], ref_cov_loss, rtol=1e-4)
    r1, r2 = numeric_grad(lambda a, b: np_corinfomax(a, b, ref_state)[0], z1, z2)
    assert_grad_close(g1, r1)
    assert_grad_close(g2, r2)
    ref_state = next_ref_state
    for key, value in ref_state.items():
      np.testing.assert_allclose(state[key], value, rtol=1e-4, atol=1e-6)


def test_corinfomax_logdet_gradient_pushes_away_from_running_mean():
  """LOSSES.md §1 (b), thesis App. C: Σ_n ⟨∂logdet(R1' + εI)/∂z1[n], mu1' − z1[n]⟩ < 0."""
  config = config_of('corinfomax')
  rng = np.random.default_rng(3)
  z = jnp.asarray(rng.normal(size=(32, 8)), jnp.float32)
  mu, cov = jnp.asarray(rng.normal(size=8), jnp.float32), jnp.eye(8)

  def logdet(z):
    mu_new, _, r = linalg.running_mean_cov(z, mu, cov, config.lam)
    return linalg.logdet_cholesky(linalg.add_eps(r, config.eps)), mu_new

  grad, mu_new = jax.grad(logdet, has_aux=True)(z)
  assert float(jnp.sum(grad * (mu_new - z))) < 0


def test_corinfomax_attraction_gradient():
  """LOSSES.md §1 (c): the attraction gradient is (2 alpha / (N P)) (z1[n] − z2[n])."""
  views = random_views(4, 16, 8)
  state = corinfomax.init_state(8, config_of('corinfomax'))
  _, g1, g2, _, _ = value_and_grad(corinfomax, config_of('corinfomax'), views, state)
  _, c1, c2, _, _ = value_and_grad(corinfomax, config_of('corinfomax', alpha=0.0), views, state)
  expected = 2 * 250.0 / (16 * 8) * (views['z1'] - views['z2'])
  np.testing.assert_allclose(g1 - c1, expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(g2 - c2, -expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('cond,order,tolerance', [(5.0, 16, 2e-3), (10.0, 32, 1e-3)])
def test_taylor_logdet_converges_to_exact(cond, order, tolerance):
  """LOSSES.md §2: 64×64 spectrum, c = 1.05·λ_max."""
  q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(64, 64)))
  eigenvalues = np.geomspace(1.0, cond, 64)
  m = jnp.asarray((q * eigenvalues) @ q.T, jnp.float32)
  exact = np.sum(np.log(eigenvalues))
  errors = [abs(float(linalg.logdet_taylor(m, 1.05 * cond, k)) - exact) / abs(exact)
            for k in (4, 8, order)]
  assert errors[0] > errors[1] > errors[2]
  assert errors[2] <= tolerance


def emi_mi(views, **overrides):
  config = config_of('emi', **overrides)
  state = emi.init_state(views['z1'].shape[1], config)
  metrics = jax.jit(lambda v, s: emi.loss_fn(v, s, config)[2])(views, state)
  return float(metrics['mi_a']), float(metrics['mi_b'])


def test_emi_taylor_matches_exact_on_well_conditioned_views():
  rng = np.random.default_rng(6)
  z1, z2 = rng.normal(size=(2, 4096, 8))
  views = {'z1': z1, 'z2': z2, 't1': 0.5 * z2 + rng.normal(size=z1.shape),
           't2': 0.5 * z1 + rng.normal(size=z2.shape)}
  exact = emi_mi(views, logdet='exact', lam=0.0)
  taylor = emi_mi(views, logdet='taylor', order=32, lam=0.0)
  np.testing.assert_allclose(taylor, exact, rtol=1e-3)


def test_emi_mi_nonnegative_and_zero_for_independent_views():
  rng = np.random.default_rng(7)
  n, dim = 4096, 4
  for mixing in (0.3, 1.0, 3.0):
    z1, z2 = rng.normal(size=(2, n, dim))
    views = {'z1': z1, 'z2': z2, 't1': mixing * z2 @ rng.normal(size=(dim, dim))
             + rng.normal(size=z1.shape), 't2': mixing * z1 + rng.normal(size=z2.shape)}
    assert min(emi_mi(views, logdet='exact')) > 0.05
  # Independent draws: I ≈ P²/(2N) from sampling noise alone.
  independent = emi_mi(random_views(8, n, dim), logdet='exact')
  assert min(independent) >= 0 and max(independent) < 5 * dim**2 / (2 * n)
  # Exactly uncorrelated batch (orthonormal centred columns): both evaluators give I = 0.
  x = rng.normal(size=(n, 4 * dim))
  basis = np.linalg.qr(x - x.mean(0))[0] * np.sqrt(n)
  views = {'z1': basis[:, :dim], 't2': basis[:, dim:2 * dim], 'z2': basis[:, 2 * dim:3 * dim],
           't1': basis[:, 3 * dim:]}
  for logdet in ('exact', 'taylor'):
    np.testing.assert_allclose(emi_mi(views, logdet=logdet, lam=0.0), 0.0, atol=1e-4)


def test_emi_invariant_to_invertible_linear_map():
  """Exact-mode I(z1·A; t2) = I(z1; t2) (lam = 0 so C is the batch covariance, eps = 0)."""
  rng = np.random.default_rng(9)
  z1, z2 = rng.normal(size=(2, 1024, 6))
  views = {'z1': z1, 'z2': z2, 't1': z1 + rng.normal(size=z1.shape),
           't2': z1 + z2 + rng.normal(size=z2.shape)}
  a = rng.normal(size=(6, 6)) + 3 * np.eye(6)
  before = emi_mi(views, logdet='exact', lam=0.0, eps=0.0)
  after = emi_mi({**views, 'z1': z1 @ a}, logdet='exact', lam=0.0, eps=0.0)
  np.testing.assert_allclose(after, before, rtol=1e-4)


def exchangeable_views(x, y, rng):
  """Pairings whose batch statistics are exchangeable: (z1, t2) holds every pair both ways round,
  so C_11 = C_22 and C_12 is symmetric; (z2, t1) likewise."""
  other = rng.normal(size=x.shape)
  return {'z1': np.concatenate([x, y]), 't2': np.concatenate([y, x]),
          'z2': np.concatenate([x, other]), 't1': np.concatenate([other, x])}


def test_emi_sum_difference_equals_theorem_1_for_exchangeable_views():
  """joint='sum_difference': logdet C = logdet Cov((z+t)/√2) + logdet Cov((z−t)/√2) when the
  pairing is exchangeable, so both joints give the same exact I."""
  rng = np.random.default_rng(12)
  x = rng.normal(size=(2048, 6))
  y = 0.7 * x @ rng.normal(size=(6, 6)) + rng.normal(size=x.shape)
  views = exchangeable_views(x, y, rng)
  theorem = emi_mi(views, logdet='exact', lam=0.0)
  sum_difference = emi_mi(views, logdet='exact', lam=0.0, joint='sum_difference')
  assert theorem[0] > 0.1   # pairing b draws an independent partner: I ≈ 0
  np.testing.assert_allclose(sum_difference, theorem, rtol=1e-4)


def test_emi_sum_difference_zero_without_cross_covariance():
  """Exchangeable, uncorrelated pairing (orthonormal centred columns): I = 0 for both evaluators
  (the rotated blocks equal the diagonal ones, so the Taylor I is exactly 0 too)."""
  rng = np.random.default_rng(13)
  n, dim = 1024, 4
  x = rng.normal(size=(n, 3 * dim))
  basis = np.linalg.qr(x - x.mean(0))[0] * np.sqrt(n)
  a, b, c = basis[:, :dim], basis[:, dim:2 * dim], basis[:, 2 * dim:]
  views = {'z1': np.concatenate([a, b]), 't2': np.concatenate([b, a]),
           'z2': np.concatenate([a, c]), 't1': np.concatenate([c, a])}
  for logdet in ('exact', 'taylor'):
    np.testing.assert_allclose(emi_mi(views, logdet=logdet, lam=0.0, joint='sum_difference'),
                               0.0, atol=1e-4)


def test_emi_sum_difference_not_invariant_to_a_map_of_one_view():
  """Theorem 1's I ignores a rescaling of z alone; the sum/difference I falls, since z no longer
  matches t in its own coordinates."""
  rng = np.random.default_rng(14)
  x = rng.normal(size=(1024, 6))
  views = exchangeable_views(x, x + 0.3 * rng.normal(size=x.shape), rng)
  scaled = {**views, 'z1': 3.0 * views['z1']}
  for joint, changes in (('concatenated', False), ('sum_difference', True)):
    before = emi_mi(views, logdet='exact', lam=0.0, eps=0.0, joint=joint)[0]
    after = emi_mi(scaled, logdet='exact', lam=0.0, eps=0.0, joint=joint)[0]
    if changes:
      assert after < before - 0.5
    else:
      np.testing.assert_allclose(after, before, rtol=1e-4)


def test_emi_rejects_unknown_joint():
  views = random_views(15, 16, 4)
  config = config_of('emi', joint='stacked')
  with pytest.raises(ValueError, match="unknown loss.joint 'stacked'"):
    emi.loss_fn(views, emi.init_state(4, config), config)


def test_emi_power_iteration_tracks_top_eigenvalue():
  """λ̂_max (EMA of warm-started power iterations) within 1 % of eigvalsh after warm-up."""
  rng = np.random.default_rng(10)
  dim = 8
  mix = rng.normal(size=(dim, dim)) + 2 * np.eye(dim)
  z1, z2 = rng.normal(size=(2, 512, dim)) @ mix
  views = {'z1': z1, 'z2': z2, 't1': z2 + 0.5 * rng.normal(size=z1.shape),
           't2': z1 + 0.5 * rng.normal(size=z2.shape)}
  config = config_of('emi')
  step = jax.jit(lambda s: emi.loss_fn(views, s, config)[1])
  state = emi.init_state(dim, config)
  for _ in range(30):
    state = step(state)
  for pairing in ('a', 'b'):
    c = np.asarray(state[pairing]['C'], np.float64) + config.eps * np.eye(2 * dim)
    top = np.linalg.eigvalsh(c)[-1]
    assert abs(float(state[pairing]['lambda_max']) / top - 1) < 0.01


def test_minc_repulsion_is_spectral_pairwise_term():
  """beta = 0, online targets, Λ from the same batch: mean_n zᵀ(ZᵀZ/N)z = (1/N²)Σ_ij (z_i·z_j)²."""
  views = random_views(11, 32, 8, 0.3)
  z1, z2 = views['z1'].astype(np.float64), views['z2'].astype(np.float64)
  for form in minc.FORMS:
    config = config_of('minc', beta=0.0, target='online', form=form, mu=100.0)  # no clipping
    state = minc.init_state(8, config)
    _, _, metrics = minc.loss_fn({'z1': z1, 'z2': z1}, state, config)
    np.testing.assert_allclose(metrics['repulsion'], np.sum((z1 @ z1.T)**2) / 32**2, rtol=1e-5)
    loss, _, metrics = minc.loss_fn(views, state, config)
    pairwise = np.sum((z1 @ z2.T)**2) / 32**2
    np.testing.assert_allclose(metrics['repulsion'], pairwise, rtol=1e-5)
    np.testing.assert_allclose(loss, -2 * np.mean(np.sum(z1 * z2, 1)) + pairwise, rtol=1e-5)


@pytest.mark.parametrize('form', minc.FORMS)
@pytest.mark.parametrize('target', minc.TARGETS)
def test_minc_per_sample_gradient(form, target):
  """∂ℓ[n]/∂z[n] = −2s·t[n] + 2s²·T(Λ')z[n] for both pairings (the loss averages 2N samples)."""
  n, dim, s, beta = 16, 6, 0.7, 0.5
  views = random_views(12, n, dim, 0.4)
  config = config_of('minc', form=form, target=target, scale=s, beta=beta, mu=100.0)
  rng = np.random.default_rng(13)
  state = {k: (lambda a: a @ a.T / dim)(rng.normal(size=(dim, dim))).astype(np.float32)
           for k in ('Lam1', 'Lam2')}
  _, g1, g2, new_state, _ = value_and_grad(minc, config, views, state)
  t1, t2 = (views['t1'], views['t2']) if target == 'ema' else (views['z1'], views['z2'])
  for q, t in (('1', t1), ('2', t2)):
    lam = beta * state['Lam' + q] + (1 - beta) * t.T @ t / n
    np.testing.assert_allclose(new_state['Lam' + q], lam, rtol=1e-5, atol=1e-6)
  for grad, z, t, q in ((g1, views['z1'], t2, '2'), (g2, views['z2'], t1, '1')):
    transformed = np.asarray(minc.transform(jnp.asarray(new_state['Lam' + q]), form))
    if form == 'gha':
      assert np.allclose(np.triu(transformed, 1), 0)
    expected = -2 * s * t + 2 * s**2 * z @ transformed.T
    np.testing.assert_allclose(2 * n * grad, expected, rtol=1e-4, atol=1e-5)


def test_minc_clips_rows_as_spectral():
  """Online and target rows longer than sqrt(mu) count as rescaled to sqrt(mu), as in spectral."""
  views = random_views(14, 16, 6, 2.0)
  clipped = {k: np.asarray(linalg.clip_rows(jnp.asarray(v), 0.5)) for k, v in views.items()}
  assert np.allclose(np.linalg.norm(clipped['z1'], axis=1), np.sqrt(0.5), rtol=1e-5)
  config = config_of('minc', mu=0.5)
  state = minc.init_state(6, config)
  np.testing.assert_allclose(minc.loss_fn(views, state, config)[0],
                             minc.loss_fn(clipped, state, config)[0], rtol=1e-5)


def test_minc_does_not_collapse_where_spectral_does_not():
  """Linear encoder on noisy Gaussian views: MINC keeps the embedding rank as spectral does,
  while the attraction term alone loses it."""
  d, dim, n, steps = 16, 8, 128, 150
  scales = jnp.linspace(2.0, 0.5, d)

  def batch(key):
    k1, k2, k3 = jax.random.split(key, 3)
    x = jax.random.normal(k1, (n, d)) * scales
    return x + jax.random.normal(k2, (n, d)), x + jax.random.normal(k3, (n, d))

  def train(loss, state, normalise, lr):
    def embed(w, x):
      z = x @ w
      return z / linalg.row_norms(z) if normalise else z

    def objective(w, state, key):
      x1, x2 = batch(key)
      value, state, _ = loss({'z1': embed(w, x1), 'z2': embed(w, x2)}, state)
      return value, state

    @jax.jit
    def run(w, state):
      def body(i, carry):
        w, state = carry
        grad, state = jax.grad(objective, has_aux=True)(w, state, jax.random.key(i))
        return w - lr * grad, state
      w, _ = jax.lax.fori_loop(0, steps, body, (w, state))
      z = embed(w, batch(jax.random.key(steps))[0])
      return linalg.effective_rank(jnp.linalg.eigvalsh(linalg.batch_cov(z)))

    w0 = 0.1 * jax.random.normal(jax.random.key(1), (d, dim))
    return float(run(w0, state))

  spec = config_of('spectral')
  rank_spectral = train(lambda v, s: spectral.loss_fn(v, s, spec), {}, False, 0.05)
  ranks = {}
  for form in minc.FORMS:
    config = config_of('minc', target='online', form=form)
    ranks[form] = train(lambda v, s: minc.loss_fn(v, s, config), minc.init_state(dim, config),
                        False, 0.1)
  attraction = train(lambda v, s: (-2 * jnp.mean(jnp.sum(
      v['z1'] * jax.lax.stop_gradient(v['z2']), 1)), s, {}), {}, True, 0.5)
  assert rank_spectral > 0.8 * dim
  assert min(ranks.values()) > 0.8 * dim
  assert attraction < min(ranks.values()) - 1.0


VARIANTS = [('corinfomax', {}), ('emi', {}), ('emi', {'logdet': 'exact'}),
            ('emi', {'joint': 'sum_difference'}),
            ('minc', {}), ('minc', {'form': 'gha', 'target': 'online'}), ('spectral', {}),
            ('vicreg', {}), ('barlow', {}), ('simclr', {}), ('byol', {}), ('simsiam', {}),
            ('mocov2', {'queue_size': 128}), ('wmse', {'w_size': 16})]
VARIANT_IDS = [name + ''.join(f'-{v}' for v in overrides.values())
               for name, overrides in VARIANTS]


def test_every_registered_loss_is_tested():
  assert sorted({name for name, _ in VARIANTS}) == losses.names()


def sharded_value_and_grad(name, overrides, views, state, devices):
  mesh = jax.sharding.Mesh(np.array(devices), ('data',),
                           axis_types=(jax.sharding.AxisType.Auto,))
  batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  views = jax.device_put(views, batch)
  state = jax.device_put(state, replicated)
  return value_and_grad(losses.get(name), config_of(name, **overrides), views, state)[:4]


def loss_device_drift(name, overrides, dtype):
  """Largest relative difference (scaled by each output's largest entry) of the loss, its
  gradients and new state between 1 and 8 devices, in `dtype`."""
  with jax.enable_x64(dtype == 'float64'):
    views = jax.tree.map(lambda v: v.astype(dtype), random_views(14, 64, 8, 0.3))
    views['z2'] = views['z1'] + 0.3 * views['z2']
    views['t2'] = views['z2'] + 0.1 * views['t2']
    views['t1'] = views['z1'] + 0.1 * views['t1']
    state = losses.get(name).init_state(8, config_of(name, **overrides))
    one = sharded_value_and_grad(name, overrides, views, state, jax.devices()[:1])
    eight = sharded_value_and_grad(name, overrides, views, state, jax.devices())
  drift = 0.0
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight)):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.dtype == b.dtype and np.all(np.isfinite(a))
    drift = max(drift, float(np.max(np.abs(b - a)) / max(np.max(np.abs(a)), 1e-30)))
  return drift


# Measured with tests/measure_drift.py, largest over the variants, under four XLA CPU code paths
# (default, --xla_cpu_max_isa=AVX2, YNNPACK fusions off, both): float64 9.3e-15, float32 3.45e-6
# (Barlow Twins; the others ≤ 2.6e-6). Bounds 100× and 14× above (docs/reliability.md).
LOSS_DRIFT_TOLERANCES = {'float64': 1e-12, 'float32': 5e-5}


@pytest.mark.numerics
@pytest.mark.parametrize('dtype', ['float64', 'float32'])
@pytest.mark.parametrize('name,overrides', VARIANTS, ids=VARIANT_IDS)
def test_one_and_eight_devices_agree(name, overrides, dtype):
  assert len(jax.devices()) == 8
  drift = loss_device_drift(name, overrides, dtype)
  assert drift <= LOSS_DRIFT_TOLERANCES[dtype], f'{dtype}: relative drift {drift:.2e}'


# W-MSE whitens: a collapsed or N < P sub-batch has no whitening (the next test).
FINITE_VARIANTS = [(n, o) for n, o in VARIANTS if n != 'wmse']


def test_wmse_on_collapsed_embeddings_is_nonfinite_for_the_divergence_guard():
  views = {k: np.ones((16, 4), np.float32) for k in ('z1', 'z2')}
  config = config_of('wmse', w_size=8)
  loss = wmse.loss_fn(views, wmse.init_state(4, config), config)[0]
  assert not np.isfinite(loss)   # train.py stops with one line (or skips the batch)


@pytest.mark.parametrize('name,overrides', FINITE_VARIANTS,
                         ids=[i for i, v in zip(VARIANT_IDS, VARIANTS) if v in FINITE_VARIANTS])
@pytest.mark.parametrize('case', ['collapsed', 'n_below_p'])
def test_finite_on_degenerate_embeddings(name, overrides, case):
  n, dim = (16, 8) if case == 'collapsed' else (4, 16)
  views = random_views(15, n, dim, 0.3)
  if case == 'collapsed':
    views = {k: np.repeat(views['z1'][:1], n, axis=0) for k in views}
  module, config = losses.get(name), config_of(name, **overrides)
  state = module.init_state(dim, config)
  step = gradient_step(module, config)
  for _ in range(3):
    outputs = step(views, state)
    state = outputs[3]
    for leaf in jax.tree.leaves(outputs):
      assert np.all(np.isfinite(leaf)), (name, case)


def test_collapse_diagnostics_from_batch_covariances():
  """Losses without running covariances report LDMI (eq. 3.6), the spectrum and the effective
  rank of the current batch's covariances, checked against a float64 NumPy computation."""
  views = random_views(21, 256, 8)
  z1 = np.asarray(views['z1'], np.float64)
  z2 = 0.8 * z1 + 0.6 * np.asarray(views['z2'], np.float64)
  c1, c2 = z1 - z1.mean(0), z2 - z2.mean(0)
  r1, r2, r12 = c1.T @ c1 / 256, c2.T @ c2 / 256, c1.T @ c2 / 256
  logdet = lambda m: np.linalg.slogdet(m)[1]
  expected_ldmi = 0.25 * (logdet(r1) + logdet(r2) - logdet(r1 - r12 @ np.linalg.solve(r2, r12.T))
                          - logdet(r2 - r12.T @ np.linalg.solve(r1, r12)))
  eigenvalues = np.sort(np.linalg.eigvalsh(r1))[::-1]
  p = eigenvalues / eigenvalues.sum()
  result = losses.collapse_diagnostics('vicreg', {}, jnp.asarray(z1, jnp.float32),
                                       jnp.asarray(z2, jnp.float32), eps=1e-8)
  np.testing.assert_allclose(result['ldmi'], expected_ldmi, rtol=1e-4)
  np.testing.assert_allclose(result['eigenvalues_R1'], eigenvalues, rtol=1e-4)
  np.testing.assert_allclose(result['effective_rank'], np.exp(-np.sum(p * np.log(p))), rtol=1e-4)
