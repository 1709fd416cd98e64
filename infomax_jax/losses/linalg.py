"""Linear algebra shared by the information-maximisation losses.

Running (exponentially forgotten) means and covariances, log-determinant evaluators and power
iteration. Every function is pure and works on the global batch it is given.
"""
import jax
import jax.numpy as jnp


def as_float(x):
  """`x` in the dtype of the loss statistics: float32 for float32 and bfloat16 embeddings,
  float64 for float64 ones (models.COMPUTE_DTYPES['float64'], under jax_enable_x64)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def forget(old, new, lam):
  """Exponential forgetting, CorInfoMax eq. 4.3/4.5: `lam` weights the old estimate."""
  return lam * old + (1.0 - lam) * new


def running_mean_cov(z, mu, cov, lam):
  """Updated running mean and covariance of the rows of `z` (thesis eqs. 4.3-4.5).

  The batch part stays differentiable; the carried `mu`, `cov` are treated as constants.
  Returns (mu', zc, cov') with zc = z - mu' the centred batch and cov' normalised by N.
  """
  mu_new = forget(jax.lax.stop_gradient(mu), jnp.mean(z, axis=0), lam)
  zc = z - mu_new
  cov_new = forget(jax.lax.stop_gradient(cov), zc.T @ zc / z.shape[0], lam)
  return mu_new, zc, cov_new


def batch_cov(z):
  """Covariance of the rows of `z`, normalised by N."""
  zc = z - jnp.mean(z, axis=0)
  return zc.T @ zc / z.shape[0]


def row_norms(z):
  """Euclidean norms of the rows of `z`, shape (N, 1), with a finite gradient at a zero row."""
  return jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(z), axis=-1, keepdims=True), 1e-24))


def cosine_similarity(a, b):
  """Row-wise cos(a, b), with norms clamped at 1e-12 like torch's F.normalize."""
  return jnp.sum(a / row_norms(a) * (b / row_norms(b)), axis=1)


def clip_rows(z, mu):
  """Rows with norm ≥ sqrt(mu) rescaled to norm sqrt(mu); shorter rows unchanged (HaoChen et al.)."""
  norms = row_norms(z)
  radius = jnp.sqrt(mu)
  return z * jnp.where(norms < radius, 1.0, radius / norms)


def add_eps(m, eps):
  return m + eps * jnp.eye(m.shape[-1], dtype=m.dtype)


def cholesky_with_jitter(m, tries=8):
  """Cholesky factor of a symmetric PSD `m` (2-D).

  float32 rounding can leave a nearly singular covariance slightly indefinite, and the plain
  factorisation then returns NaN. Only in that case the factorisation is repeated with diagonal
  jitter 1e-7·mean(diag m)·10^k, k = 0, 1, ..., until it succeeds (at most `tries` times).
  """
  chol = jnp.linalg.cholesky(m)
  eye = jnp.eye(m.shape[-1], dtype=m.dtype)
  scale = 1e-7 * jnp.trace(m) / m.shape[-1]

  def failed(carry):
    k, factor = carry
    return (k < tries) & ~jnp.all(jnp.isfinite(factor))

  def retry(carry):
    k, _ = carry
    return k + 1, jnp.linalg.cholesky(m + scale * 10.0**k * eye)

  return jax.lax.while_loop(failed, retry, (0, chol))[1]


@jax.custom_vjp
def logdet_cholesky(m):
  """log det of an SPD matrix as 2·Σ log diag(chol(m)); the gradient is m⁻¹ by cho_solve."""
  return _logdet_fwd(m)[0]


def _logdet_fwd(m):
  chol = cholesky_with_jitter(m)
  return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol))), chol


def _logdet_bwd(chol, g):
  inverse = jax.scipy.linalg.cho_solve((chol, True), jnp.eye(chol.shape[-1], dtype=chol.dtype))
  return (g * 0.5 * (inverse + inverse.T),)


logdet_cholesky.defvjp(_logdet_fwd, _logdet_bwd)


def power_iteration(m, v, steps):
  """Top eigenpair of symmetric PSD `m` by `steps` power iterations warm-started at `v`.

  Returns (eigenvalue estimate vᵀ m v, unit eigenvector), both without gradient.
  """
  m = jax.lax.stop_gradient(m)

  def body(_, vec):
    w = m @ vec
    return w / (jnp.linalg.norm(w) + 1e-30)

  v = jax.lax.fori_loop(0, steps, body, v / (jnp.linalg.norm(v) + 1e-30))
  return v @ m @ v, v


def logdet_taylor(m, scale, order):
  """Truncated Taylor log-det, LOSSES.md §2: d·log c − Σ_{k=1..K} tr((I − m/c)^k)/k.

  `scale` c must exceed λ_max(m) so that the series converges; only matrix products are used,
  and tr(X^(a+b)) = Σ_ij (X^a)_ij (X^b)_ji gives all K traces from powers up to ⌈K/2⌉.
  """
  d = m.shape[-1]
  x = jnp.eye(d, dtype=m.dtype) - m / scale
  powers = [x]
  for _ in range((order + 1) // 2 - 1):
    powers.append(powers[-1] @ x)
  total = 0.0
  for k in range(1, order + 1):
    a = (k + 1) // 2
    b = k - a
    if b == 0:
      trace = jnp.trace(powers[a - 1])
    else:
      trace = jnp.sum(powers[a - 1] * powers[b - 1].T)
    total = total + trace / k
  return d * jnp.log(scale) - total


def effective_rank(eigenvalues):
  """exp of the Shannon entropy of the normalised spectrum (Roy & Vetterli), thesis Fig. 5.3."""
  p = jnp.clip(eigenvalues, 0.0, None)
  p = p / jnp.maximum(jnp.sum(p), 1e-30)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def ldmi(r1, r2, r12, eps):
  """Log-determinant mutual information I_LD, thesis eq. 3.6 (LOSSES.md §1)."""
  r1e, r2e = add_eps(r1, eps), add_eps(r2, eps)
  schur1 = r1 - r12 @ jnp.linalg.solve(r2e, r12.T)
  schur2 = r2 - r12.T @ jnp.linalg.solve(r1e, r12)
  return 0.25 * (logdet_cholesky(r1e) + logdet_cholesky(r2e)
                 - logdet_cholesky(add_eps(0.5 * (schur1 + schur1.T), eps))
                 - logdet_cholesky(add_eps(0.5 * (schur2 + schur2.T), eps)))
