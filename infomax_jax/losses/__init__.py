"""Loss registry: `config.loss.name` → module with `L2_NORMALIZED_EMBEDDINGS` (whether the
projector L2-normalises its output for it), `PROJECTOR_HIDDEN_BATCHNORM` (whether its reference
projector has BatchNorm in the hidden layers), `default_config()`, `init_state(dim, config)` and
`loss_fn(views, state, config) -> (loss, new_state, metrics)` (LOSSES.md).

Optional module attributes: `uses_target_network(config) -> bool` (the train step then adds
momentum-encoder embeddings t1, t2 to `views` and keeps an EMA target in the TrainState, with
momentum `config.target_momentum`), and `diagnostic_covariances(state, z1, z2)` (running
covariances to report the collapse diagnostics from, instead of the batch ones), and `OPTIMIZER`
(a dict of `config.optimizer` values from the loss's own recipe, e.g. LARS; configs apply it),
`PROJECTOR_DIMS` (the projector of the loss's own recipe, which the experiment configs use
instead of the thesis one), `AUGMENTATIONS` (`augment_config.augment_config` arguments of the
loss's own CIFAR recipe, applied at 32 px instead of Table B.1), `CIFAR_LOSS` (loss values of the
CIFAR recipe that differ from the paper's defaults, applied up to 64 px), `IMAGENET_LOSS`,
`IMAGENET_OPTIMIZER`, `IMAGENET_PROJECTOR_DIMS` (the paper's ImageNet values, applied above
64 px), `PREDICTOR_HIDDEN_DIM` (the train step then adds predictions p1, p2 of a predictor MLP
to `views`) and `PROJECTOR_OUTPUT_BATCHNORM` (BatchNorm without scale and offset after the
projector).

Adding a loss is one new file in this package plus one line in `_REGISTRY`.
"""
import jax
import jax.numpy as jnp

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

_REGISTRY = {
    'corinfomax': corinfomax,
    'emi': emi,
    'minc': minc,
    'spectral': spectral,
    'vicreg': vicreg,
    'barlow': barlow,
    'simclr': simclr,
    'byol': byol,
    'simsiam': simsiam,
    'mocov2': mocov2,
    'wmse': wmse,
}


def get(name):
  """The loss module registered under `name`; a one-line error lists the known names."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(f'unknown loss {name!r}; known losses: {", ".join(sorted(_REGISTRY))}') from None


def default_config(name):
  """The loss's hyper-parameters with their paper defaults, plus its name."""
  config = get(name).default_config()
  config.name = name
  return config


def names():
  return sorted(_REGISTRY)


def uses_target_network(config):
  """Whether the loss reads target-network embeddings (t1, t2) from a momentum encoder."""
  return bool(getattr(get(config.name), 'uses_target_network', lambda c: False)(config))


def collapse_diagnostics(name, state, z1, z2, eps):
  """LDMI (thesis eq. 3.6), sorted eigenvalues of R1 and its effective rank (Fig. 5.3).

  Losses that carry running covariances report those; the others use the covariances of the
  current global batch of embeddings.
  """
  module = get(name)
  if hasattr(module, 'diagnostic_covariances'):
    r1, r2, r12 = module.diagnostic_covariances(state, z1, z2)
  else:
    z1, z2 = linalg.as_float(z1), linalg.as_float(z2)
    r1, r2 = linalg.batch_cov(z1), linalg.batch_cov(z2)
    r12 = (z1 - jnp.mean(z1, axis=0)).T @ (z2 - jnp.mean(z2, axis=0)) / z1.shape[0]
  r1, r2, r12 = jax.lax.stop_gradient((r1, r2, r12))
  eigenvalues = jnp.linalg.eigvalsh(r1)[::-1]
  return {'ldmi': linalg.ldmi(r1, r2, r12, eps),
          'effective_rank': linalg.effective_rank(eigenvalues),
          'eigenvalues_R1': eigenvalues}
