"""The encoder and projector follow the official PyTorch models (torchvision ResNets with
zero_init_residual=True, the CIFAR stem conv and nn.Linear defaults, PyTorch's BatchNorm)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from infomax_jax import models


def _encoder(name='resnet18', width=0.125, cifar_stem=True):
  return models.build_encoder(ml_collections.ConfigDict(
      dict(name=name, width=width, cifar_stem=cifar_stem)))


def _numpy_conv(x, kernel, stride, padding):
  """PyTorch's Conv2d (zero padding `padding` on every side, no bias) on NHWC / HWIO arrays."""
  x = np.pad(np.asarray(x, np.float64), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  k = np.asarray(kernel, np.float64)
  size = (x.shape[1] - k.shape[0]) // stride + 1
  out = np.zeros((x.shape[0], size, size, k.shape[3]))
  for i in range(size):
    for j in range(size):
      window = x[:, i * stride:i * stride + k.shape[0], j * stride:j * stride + k.shape[1]]
      out[:, i, j] = np.einsum('nhwc,hwco->no', window, k)
  return out


def test_stride_two_convolution_pads_one_pixel_on_every_side_as_pytorch():
  encoder = _encoder()
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  variables = encoder.init(jax.random.key(1), x, train=True)
  _, captured = encoder.apply(variables, x, train=True, mutable=['batch_stats', 'intermediates'],
                              capture_intermediates=True)
  captured = captured['intermediates']
  block_input = captured['BasicBlock_1']['__call__'][0]         # 16×16, into the first stride 2
  output = captured['BasicBlock_2']['Conv_0']['__call__'][0]     # 3×3 stride-2 conv: 8×8
  kernel = variables['params']['BasicBlock_2']['Conv_0']['kernel']
  reference = _numpy_conv(block_input, kernel, stride=2, padding=1)
  # float32 sums of 9·8 products against float64: measured max error 3.6e-7 with max |y| 2.1.
  np.testing.assert_allclose(output, reference, rtol=0, atol=1e-5 * np.abs(reference).max())
  shifted = _numpy_conv(np.pad(block_input, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1:, 1:], kernel,
                        stride=2, padding=1)                      # flax 'SAME': pads (0, 1)
  assert np.abs(shifted - reference).max() > 0.1 * np.abs(reference).max()


@pytest.mark.parametrize('name, last', [('resnet18', 'BatchNorm_1'), ('resnet50', 'BatchNorm_2')])
def test_last_batchnorm_scale_of_every_residual_branch_starts_at_zero(name, last):
  params = _encoder(name, width=0.0625).init(jax.random.key(0), jnp.ones((2, 8, 8, 3)),
                                            train=True)['params']
  blocks = [k for k in params if k.startswith(('BasicBlock', 'Bottleneck'))]
  assert len(blocks) == {'resnet18': 8, 'resnet50': 16}[name]
  for block in blocks:
    for norm, values in params[block].items():
      if norm.startswith('BatchNorm'):
        expected = 0.0 if norm == last else 1.0     # the projection shortcut's BN starts at 1
        np.testing.assert_array_equal(values['scale'], expected, err_msg=f'{block}/{norm}')
  np.testing.assert_array_equal(params['BatchNorm_0']['scale'], 1.0)   # the stem's


def _uniform_bound_and_std(values, bound):
  values = np.asarray(values).ravel()
  assert np.abs(values).max() <= bound
  # the std of U(±b) is b/√3; the sample std of n ≥ 1,700 draws is within 4 % (≈ 4.5 σ)
  np.testing.assert_allclose(values.std(), bound / np.sqrt(3), rtol=0.04)


def test_initialisations_are_the_official_models():
  x = jnp.ones((2, 8, 8, 3))
  cifar = _encoder(width=1.0).init(jax.random.key(0), x, train=True)['params']
  _uniform_bound_and_std(cifar['Conv_0']['kernel'], 1 / np.sqrt(27))    # nn.Conv2d default
  imagenet = _encoder(width=1.0, cifar_stem=False).init(jax.random.key(0), x, train=True)['params']
  stem = np.asarray(imagenet['Conv_0']['kernel'])                       # kaiming_normal_ fan_out
  assert stem.shape == (7, 7, 3, 64)
  np.testing.assert_allclose(stem.std(), np.sqrt(2 / (49 * 64)), rtol=0.04)
  block = np.asarray(cifar['BasicBlock_0']['Conv_0']['kernel'])
  np.testing.assert_allclose(block.std(), np.sqrt(2 / (9 * 64)), rtol=0.02)

  projector = models.Projector((2048, 2048, 64))
  params = projector.init(jax.random.key(0), jnp.ones((2, 512)), train=True)['params']
  _uniform_bound_and_std(params['Dense_0']['bias'], 1 / np.sqrt(512))   # nn.Linear default
  _uniform_bound_and_std(params['Dense_1']['bias'], 1 / np.sqrt(2048))
  _uniform_bound_and_std(params['Dense_0']['kernel'], 1 / np.sqrt(512))
  assert 'bias' not in params['Dense_2']                                # bias-free output


@pytest.mark.parametrize('shape', [(6, 5), (3, 4, 4, 5)])
def test_batchnorm_is_pytorchs(shape):
  """Normalises with the biased batch variance; running var ← 0.9·var + 0.1·unbiased var."""
  x = np.asarray(jax.random.normal(jax.random.key(0), shape) * 3 + 1, np.float64)
  norm = models.BatchNorm(use_running_average=False)
  variables = norm.init(jax.random.key(1), x)
  y, updated = norm.apply(variables, x, mutable=['batch_stats'])
  n = x.size // shape[-1]
  axes = tuple(range(len(shape) - 1))
  mean, biased = x.mean(axes), x.var(axes)
  # float32 statistics of ≤ 48 values against float64, measured: y within 3.8e-7 (absolute),
  # the running statistics within 1.4e-7 (relative).
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(biased + 1e-5), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(updated['batch_stats']['mean'], 0.1 * mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(updated['batch_stats']['var'], 0.9 + 0.1 * biased * n / (n - 1),
                             rtol=1e-5)
  inference = models.BatchNorm(use_running_average=True).apply(
      {**variables, 'batch_stats': updated['batch_stats']}, x)
  np.testing.assert_allclose(
      inference, (x - 0.1 * mean) / np.sqrt(0.9 + 0.1 * biased * n / (n - 1) + 1e-5), rtol=1e-5,
      atol=1e-5)
