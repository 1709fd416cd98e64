"""Why EMI and MINC learn what they learn: their terms measured on a run's own checkpoints.

    python benchmarks/loss_diagnostics.py --workdir=/tmp/repro/emi [--batches 2]
        [--out benchmarks/results/loss_diagnostics_emi.json]

For every checkpoint of a finished (or running) pretraining workdir of `emi` or `minc`, the saved
TrainState (network, loss state, momentum target) is applied, as the training step applies it, to
the batches the run reads right after that checkpoint, and the loss's terms are taken apart on
them (issue #20, item 1):

- both: effective rank of the batch covariance of z1 (thesis Fig. 5.3), mean cos(z1, t1) and
  |t1 − z1| / |z1| (what the momentum target contributes), the loss's gradient norm w.r.t. z1;
- EMI (pairing z1, t2): the MI by the Taylor series against the exact (Cholesky) MI of the same
  running covariance; the series' gradient factor 1 − (1 − λ/c)^K on each eigenvalue λ of the
  joint covariance and of the z block (1 = exact slope 1/λ, 0 = an eigenvalue the series no
  longer sees), and the cosine between the Taylor MI's and the exact MI's gradients w.r.t. z1;
  the gradient norms of the entropy term ½ logdet C_zz and the joint term −½ logdet C and the
  cosine between them;
- MINC (pairing z1, t2, Λ2): how stale the running summary is (relative Frobenius distance of the
  carried Λ and of the updated Λ' to the current batch's tᵀt/N), the gradient norms of the
  attraction and the repulsion and the cosine between them, and the cosine between MINC's
  gradient w.r.t. z1 and the spectral contrastive loss's on the same online embeddings.
"""
import argparse
import functools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import report  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import evaluation  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import losses  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import sources  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax.losses import linalg  # pylint: disable=g-import-not-at-top,wrong-import-position

SUPPORTED = ('emi', 'minc')


def _cosine(a, b):
  return linalg.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1))[0]


def _grad(loss_config, views, loss_state, metric):
  """d metric / d z1, where metric is a key of the loss's metrics or 'loss'."""
  def value(z1):
    loss, _, metrics = losses.get(loss_config.name).loss_fn(dict(views, z1=z1), loss_state,
                                                            loss_config)
    return loss if metric == 'loss' else metrics[metric]
  return jax.grad(value)(views['z1'])


def _series_factor(eigenvalues, scale, order):
  """The truncated series' slope over the true slope 1/λ at each eigenvalue: 1 − (1 − λ/c)^K."""
  return 1.0 - (1.0 - eigenvalues / scale)**order


def _quantiles(x):
  return {f'q{q}': jnp.quantile(x, q / 100) for q in (10, 50, 90)}


def emi_terms(loss_config, views, loss_state):
  exact = loss_config.copy_and_resolve_references()
  exact.logdet = 'exact'
  _, new_state, metrics = losses.get('emi').loss_fn(views, loss_state, loss_config)
  _, _, exact_metrics = losses.get('emi').loss_fn(views, loss_state, exact)
  dim = views['z1'].shape[1]
  m = linalg.add_eps(new_state['a']['C'], loss_config.eps)   # the joint C' its log-dets read
  scale = loss_config.gamma * jnp.maximum(metrics['lambda_max_a'],
                                          metrics['lambda_max_estimate_a'])
  joint = jnp.linalg.eigvalsh(m)
  block = jnp.linalg.eigvalsh(m[:dim, :dim])
  factor_joint = _series_factor(joint, scale, loss_config.order)
  factor_block = _series_factor(block, scale, loss_config.order)
  grad_taylor = _grad(loss_config, views, loss_state, 'mi_a')
  grad_exact = _grad(exact, views, loss_state, 'mi_a')
  grad_entropy = 0.5 * _grad(loss_config, views, loss_state, 'logdet_z_a')
  grad_joint = -0.5 * _grad(loss_config, views, loss_state, 'logdet_joint_a')
  return {
      'mi_taylor_nats': metrics['mi_a'], 'mi_exact_nats': exact_metrics['mi_a'],
      'scale_c': scale, 'joint_eigenvalues_over_c': _quantiles(joint / scale),
      'series_factor_joint': _quantiles(factor_joint),
      'series_factor_z_block': _quantiles(factor_block),
      'share_joint_eigenvalues_factor_below_half': jnp.mean(factor_joint < 0.5),
      'cos_grad_taylor_vs_exact': _cosine(grad_taylor, grad_exact),
      'grad_norm_mi_taylor': jnp.linalg.norm(grad_taylor),
      'grad_norm_mi_exact': jnp.linalg.norm(grad_exact),
      'grad_norm_entropy_term': jnp.linalg.norm(grad_entropy),
      'grad_norm_joint_term': jnp.linalg.norm(grad_joint),
      'cos_entropy_vs_joint_term': _cosine(grad_entropy, grad_joint),
  }


def minc_terms(loss_config, views, loss_state):
  _, new_state, _ = losses.get('minc').loss_fn(views, loss_state, loss_config)
  t2 = linalg.clip_rows(views['t2'], loss_config.mu)
  batch_moment = t2.T @ t2 / t2.shape[0]
  distance = lambda lam: jnp.linalg.norm(lam - batch_moment) / jnp.linalg.norm(batch_moment)
  grad_attraction = _grad(loss_config, views, loss_state, 'attraction')
  grad_repulsion = _grad(loss_config, views, loss_state, 'repulsion')
  spectral_config = losses.default_config('spectral')
  spectral_config.mu = loss_config.mu
  grad_spectral = jax.grad(lambda z1: losses.get('spectral').loss_fn(
      {'z1': z1, 'z2': views['z2']}, {}, spectral_config)[0])(views['z1'])
  return {
      'staleness_carried_Lam': distance(loss_state['Lam2']),
      'staleness_updated_Lam': distance(new_state['Lam2']),
      'trace_batch_moment': jnp.trace(batch_moment),
      'grad_norm_attraction': jnp.linalg.norm(grad_attraction),
      'grad_norm_repulsion': jnp.linalg.norm(grad_repulsion),
      'cos_attraction_vs_repulsion': _cosine(grad_attraction, grad_repulsion),
      'cos_grad_minc_vs_spectral': _cosine(grad_attraction + grad_repulsion, grad_spectral),
  }


def diagnose(config, model, state, batch):
  def forward(variables, images):
    (_, z), _ = model.apply(variables, images, train=True, mutable=['batch_stats'])
    return linalg.as_float(z)
  online = {'params': state.params, 'batch_stats': state.batch_stats}
  views = {'z1': forward(online, batch['view1']), 'z2': forward(online, batch['view2'])}
  if state.target:
    views['t1'], views['t2'] = (forward(state.target, batch[k]) for k in ('view1', 'view2'))
  else:   # MINC with target='online': the online embeddings under stop-gradient
    views['t1'], views['t2'] = views['z1'], views['z2']
  z1, t1 = views['z1'], views['t1']
  eigenvalues = jnp.linalg.eigvalsh(linalg.batch_cov(z1))[::-1]
  common = {
      'effective_rank_z1': linalg.effective_rank(eigenvalues),
      'cos_z1_t1': jnp.mean(linalg.cosine_similarity(z1, t1)),
      'target_distance': jnp.mean(linalg.row_norms(t1 - z1) / linalg.row_norms(z1)),
      'grad_norm_loss': jnp.linalg.norm(_grad(config.loss, views, state.loss_state, 'loss')),
  }
  terms = emi_terms if config.loss.name == 'emi' else minc_terms
  return {**common, **terms(config.loss, jax.lax.stop_gradient(views), state.loss_state)}


def diagnose_workdir(workdir, batches):
  """{'loss', 'batch_size', 'steps': {step: {figure: value}}} over every checkpoint of `workdir`."""
  config = evaluation.load_config(workdir)
  if config.loss.name not in SUPPORTED:
    raise ValueError(f'{workdir} trained {config.loss.name!r}; this diagnosis takes '
                     f'{", ".join(SUPPORTED)}')
  if batches < 1:
    raise ValueError(f'batches={batches}: expected at least 1')
  manager, steps = evaluation.checkpoint_steps(workdir, 'all')
  examples = sources.load_train_split(config.data)
  model = models.build_model(config)
  tx = train.make_optimizer(config, len(examples))
  fresh = jax.jit(functools.partial(train.create_train_state, config, model, tx))(
      jax.random.key(config.seed))
  run = jax.jit(functools.partial(diagnose, config, model))
  results = {'loss': config.loss.name, 'batch_size': config.batch_size, 'steps': {}}
  for step in steps:
    state, _ = train.restore_state(manager, fresh, step)   # a stored online classifier is dropped
    _, stream = sources.pretrain_batches(examples, config, step, 0, 1)
    rows = [jax.device_get(run(state, next(stream))) for _ in range(batches)]
    results['steps'][step] = jax.tree.map(lambda *xs: float(np.mean(xs)), *rows)
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--batches', type=int, default=2,
                      help='batches after each checkpoint to average over')
  parser.add_argument('--out', default=None,
                      help='JSON path (default benchmarks/results/loss_diagnostics_<loss>.json)')
  args = parser.parse_args()
  try:
    results = diagnose_workdir(args.workdir, args.batches)
  except (ValueError, FileNotFoundError) as error:
    raise SystemExit(f'error: {error}') from None
  for step, figures in results['steps'].items():
    print(f'step {step}:')
    for name, value in figures.items():
      print(f'  {name}: {value}')
  out = args.out or os.path.join(ROOT, 'benchmarks', 'results',
                                 f'loss_diagnostics_{results["loss"]}.json')
  report.write_json(out, {'command': 'python ' + ' '.join(sys.argv), 'workdir': args.workdir,
                          **results})


if __name__ == '__main__':
  main()
