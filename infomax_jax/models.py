"""Encoders and projector (thesis §5.2.4, App. B.2).

ResNet-18/50 in the torchvision layout, with the CIFAR stem (3×3 stride-1 first conv, no
max-pool) for 32-px inputs and a width multiplier for CPU-sized runs; the projector MLP with ReLU
hidden layers, optional hidden BatchNorm and a bias-free linear output, L2-normalised.
"""
import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from infomax_jax.losses import linalg

# The initialisations of the official models (torchvision ResNets with zero_init_residual=True,
# nn.Linear / nn.Conv2d defaults), so that runs compare with the official code.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')   # kaiming_normal_, fan_out
# nn.Linear's and nn.Conv2d's default kaiming_uniform_(a=√5): U(±1/√fan_in)
pytorch_default_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def pytorch_bias_init(fan_in):
  """nn.Linear's default bias: U(±1/√fan_in)."""
  def init(key, shape, dtype=jnp.float32):
    bound = 1 / jnp.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def pytorch_conv(features, kernel_size, strides=(1, 1), **kwargs):
  """A bias-free convolution padded k//2 on every side, as PyTorch's padding=k//2: flax's 'SAME'
  pads (0, 1) for a stride-2 3×3 convolution on an even size, a one-pixel shift."""
  return nn.Conv(features, kernel_size, strides, padding=[(k // 2, k // 2) for k in kernel_size],
                 use_bias=False, **kwargs)


class BatchNorm(nn.Module):
  """PyTorch's BatchNorm: normalises with the biased batch variance and updates the running
  variance with the unbiased one (×n/(n−1)); running = momentum·running + (1 − momentum)·batch.
  Statistics in float32 (float64) with the two-pass variance mean((x − mean)²): E[x²] − E[x]²
  cancels catastrophically in float32 and then depends on the reduction order, i.e. on the number
  of devices. Under jit with a batch-sharded input the mean is over the global batch."""
  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  use_scale: bool = True
  use_bias: bool = True
  scale_init: Any = nn.initializers.ones
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    stats_dtype = jnp.promote_types(self.param_dtype, jnp.float32)
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), stats_dtype)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (features,), stats_dtype)
    if self.use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      values = x.astype(stats_dtype)
      mean = jnp.mean(values, axes)
      var = jnp.mean(jnp.square(values - mean), axes)
      if not self.is_initializing():
        n = x.size // features
        running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
        running_var.value = (self.momentum * running_var.value
                             + (1 - self.momentum) * var * (n / max(n - 1, 1)))
    y = (x.astype(stats_dtype) - mean) * jax.lax.rsqrt(var + self.epsilon)
    if self.use_scale:
      y = y * self.param('scale', self.scale_init, (features,), self.param_dtype)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (features,), self.param_dtype)
    return y.astype(self.dtype)


class BasicBlock(nn.Module):
  filters: int
  strides: int
  conv: Any
  norm: Any

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3))(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)   # zero_init_residual
    if residual.shape != y.shape:
      residual = self.norm()(self.conv(self.filters, (1, 1), (self.strides, self.strides))(x))
    return nn.relu(residual + y)


class Bottleneck(nn.Module):
  filters: int
  strides: int
  conv: Any
  norm: Any
  expansion = 4

  @nn.compact
  def __call__(self, x):
    residual = x
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(y)
    y = nn.relu(self.norm()(y))
    y = self.norm(scale_init=nn.initializers.zeros)(   # zero_init_residual
        self.conv(self.filters * self.expansion, (1, 1))(y))
    if residual.shape != y.shape:
      residual = self.norm()(
          self.conv(self.filters * self.expansion, (1, 1), (self.strides, self.strides))(x))
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """ResNet trunk returning pooled features (512·width for ResNet-18, 2048·width for ResNet-50)."""
  stage_sizes: Sequence[int]
  block: Any
  width: float = 1.0
  cifar_stem: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    param_dtype = parameter_dtype(self.dtype)
    conv = functools.partial(pytorch_conv, kernel_init=conv_init, dtype=self.dtype,
                             param_dtype=param_dtype)
    norm = functools.partial(BatchNorm, use_running_average=not train, dtype=self.dtype,
                             param_dtype=param_dtype)
    base = max(1, int(round(64 * self.width)))
    x = x.astype(self.dtype)
    if self.cifar_stem:   # the official code replaces conv1 after torchvision's init loop
      x = conv(base, (3, 3), kernel_init=pytorch_default_init)(x)
      x = nn.relu(norm()(x))
    else:
      x = conv(base, (7, 7), (2, 2))(x)
      x = nn.relu(norm()(x))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for stage, blocks in enumerate(self.stage_sizes):
      for b in range(blocks):
        strides = 2 if stage > 0 and b == 0 else 1
        x = self.block(base * 2**stage, strides, conv, norm)(x)
    return jnp.mean(x, axis=(1, 2)).astype(param_dtype)


class Projector(nn.Module):
  """MLP: (Linear → [BatchNorm] → ReLU) per hidden dim, then a Linear (bias-free unless
  `output_bias`), [a BatchNorm without scale and offset (SimSiam)], [L2-normalised].

  Also the predictor of BYOL and SimSiam: dims (hidden, output), hidden BatchNorm, output bias.
  """
  dims: Sequence[int]
  hidden_batchnorm: bool = False
  l2_normalize: bool = True
  output_batchnorm: bool = False
  output_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    param_dtype = parameter_dtype(self.dtype)
    x = x.astype(self.dtype)
    dense = functools.partial(nn.Dense, kernel_init=pytorch_default_init, dtype=self.dtype,
                              param_dtype=param_dtype)
    for dim in self.dims[:-1]:
      x = dense(dim, use_bias=not self.hidden_batchnorm,
                bias_init=pytorch_bias_init(x.shape[-1]))(x)
      if self.hidden_batchnorm:
        x = BatchNorm(not train, dtype=self.dtype, param_dtype=param_dtype)(x)
      x = nn.relu(x)
    x = dense(self.dims[-1], use_bias=self.output_bias,
              bias_init=pytorch_bias_init(x.shape[-1]))(x)
    if self.output_batchnorm:
      x = BatchNorm(not train, use_scale=False, use_bias=False, dtype=self.dtype,
                    param_dtype=param_dtype)(x)
    x = x.astype(param_dtype)
    if self.l2_normalize:
      # max(‖x‖, 1e-12) as torch's F.normalize, with a finite gradient at a zero row (a
      # projector whose hidden ReLUs are all off for an image: EMI's demo run hit one at step 268).
      x = x / linalg.row_norms(x)
    return x


class SSLModel(nn.Module):
  """Encoder + projector [+ predictor]; returns (features before the projector, projector output).

  The predictor (BYOL, SimSiam) maps projector outputs to predictions with `predict`.
  """
  encoder: nn.Module
  projector: nn.Module
  predictor: Optional[nn.Module] = None

  def __call__(self, x, train: bool):
    features = self.encoder(x, train)
    z = self.projector(features, train)
    if self.predictor is not None and self.is_initializing():
      self.predictor(z, train)   # creates its parameters
    return features, z

  def predict(self, z, train: bool):
    return self.predictor(z, train)


_ENCODERS = {
    'resnet18': ([2, 2, 2, 2], BasicBlock),
    'resnet50': ([3, 4, 6, 3], Bottleneck),
}


def encoder_names():
  return sorted(_ENCODERS)


def build_encoder(config, dtype=jnp.float32):
  """`config` is `config.model`: name, width, cifar_stem."""
  if config.name not in _ENCODERS:
    raise ValueError(f'unknown model {config.name!r}; known models: {", ".join(encoder_names())}')
  stages, block = _ENCODERS[config.name]
  return ResNet(stages, block, width=config.width, cifar_stem=config.cifar_stem, dtype=dtype)


# float64 (parameters too) needs jax_enable_x64 (JAX_ENABLE_X64=1): the tests' reference precision,
# in which reduction order moves results by ~1e-15 rather than ~1e-7.
COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float64': jnp.float64}


def parameter_dtype(compute_dtype):
  """Parameters and the model's outputs: float32, or float64 when computing in float64."""
  return jnp.promote_types(compute_dtype, jnp.float32)


def build_model(config, dtype=None):
  """`config` is the full config: model and projector sections. Computation runs in `dtype`
  (default `config.compute_dtype`); parameters, BatchNorm statistics and the projector output
  stay float32 (float64 for float64), so every loss statistic is float32 (float64)."""
  if dtype is None:
    dtype = COMPUTE_DTYPES[config.get('compute_dtype', 'float32')]
  projector = Projector(tuple(config.projector.dims), config.projector.hidden_batchnorm,
                        config.projector.l2_normalize,
                        config.projector.get('output_batchnorm', False), dtype=dtype)
  predictor = None
  if config.get('predictor') and config.predictor.hidden_dim:
    predictor = Projector((config.predictor.hidden_dim, config.projector.dims[-1]),
                          hidden_batchnorm=True, l2_normalize=False, output_bias=True, dtype=dtype)
  return SSLModel(build_encoder(config.model, dtype), projector, predictor)
