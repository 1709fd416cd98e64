"""Figures of pretraining workdirs, as PNG files (matplotlib, Agg backend).

    python -m infomax_jax.plots --workdir=DIR [--workdir=DIR2 ...] --out=DIR [--step=N]
        [--tsne.points=2000]

  training.png     loss and LDMI against pretraining step (the TensorBoard scalars of the training
                   job) next to probe top-1 against pretraining step (probe.json; the `random`
                   encoder is the run's initialisation, step 0) — thesis Fig. 5.1
  eigenvalues.png  sorted eigenvalues of the covariance of the projector outputs of the test split,
                   log scale, one line per workdir — Fig. 5.3
  tsne.png         2-D t-SNE of encoder features of test images (class-balanced, at most
                   tsne.points), coloured by class, one panel per workdir — Fig. 5.4
  online.png       training LDMI (left axis) and the online evaluation's test top-1 (right axis:
                   linear head and kNN) against epoch, one colour per workdir — Fig. 5.1 from the
                   training job alone (config.online_eval)

Several workdirs (e.g. one per method) are overlaid in one figure. The checkpoint is the latest
unless --step. The probe job writes these figures into its workdir.
"""
import os

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags
import numpy as np

from infomax_jax import cli
from infomax_jax import evaluation
from infomax_jax import input_pipeline
from infomax_jax import models
from infomax_jax import evaluation_config
from infomax_jax import train
from infomax_jax import tsne

FLAGS = flags.FLAGS
FILES = ('training.png', 'eigenvalues.png', 'tsne.png', 'online.png')
EIGENVALUE_FLOOR = 1e-12   # eigenvalues at or below it (zero within precision) are drawn at it


def read_scalars(workdir, tags=('loss', 'ldmi'), prefixes=()):
  """{tag: (steps, values)} of the TensorBoard scalars `tags` and those starting with one of
  `prefixes` in `workdir` (last write of a step wins)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(workdir,
                                              size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()
  scalars = {}
  stored = events.Tags()['tensors']
  for tag in list(tags) + [t for t in stored if prefixes and t.startswith(tuple(prefixes))]:
    if tag in stored:
      values = {e.step: float(tensor_util.make_ndarray(e.tensor_proto))
                for e in events.Tensors(tag)}
      steps = sorted(values)
      scalars[tag] = np.array(steps), np.array([values[s] for s in steps])
  return scalars


def accuracy_curves(report):
  """{evaluation: (steps, top-1)} of probe.json; the random encoder is step 0."""
  curves = {}
  for name, encoders in report.items():
    points = {int(s): r['top1'] for s, r in encoders.get('trained', {}).items()}
    if '0' in encoders.get('random', {}):
      points[0] = encoders['random']['0']['top1']
    steps = sorted(points)
    curves[name] = np.array(steps), np.array([points[s] for s in steps])
  return curves


def covariance_eigenvalues(z):
  """Eigenvalues of the covariance of the rows of z, largest first (float64)."""
  z = np.asarray(z, np.float64)
  z = z - z.mean(axis=0)
  return np.linalg.eigvalsh(z.T @ z / len(z))[::-1]


def test_embeddings(config, manager, step, examples, mesh):
  """(encoder features, projector outputs, labels) of the test `examples` at checkpoint `step`."""
  model = models.build_model(config, jnp.float32)
  run = evaluation.batched_apply(lambda v, x: model.apply(v, x, train=False), mesh)
  (features, z), labels = run(evaluation.restore_variables(config, manager, step),
                              input_pipeline.probe_dataset(
                                  examples, config.data,
                                  evaluation.batch_size_for(config.probe.feature_batch_size),
                                  train=False))
  return features, z, labels


def _label(workdir, config):
  return f'{os.path.basename(os.path.normpath(workdir))} ({config.loss.name})'


def _empty(ax, text):
  ax.text(0.5, 0.5, text, ha='center', va='center', transform=ax.transAxes, color='gray')


def _save(fig, path):
  """Writes the figure as PNG through etils (local or bucket paths) and frees it."""
  fig.tight_layout()
  with epath.Path(path).open('wb') as f:
    fig.savefig(f, format='png', dpi=100)
  plt.close(fig)


def plot_training(runs, path):
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
  for ax, tag, title in ((axes[0], 'loss', 'training loss'), (axes[1], 'ldmi', 'training LDMI')):
    for run in runs:
      if tag in run['scalars']:
        ax.plot(*run['scalars'][tag], label=run['label'])
    if not ax.lines:
      _empty(ax, f'no TensorBoard scalar {tag!r}')
    ax.set(title=title, xlabel='pretraining step')
  ax = axes[2]
  for run in runs:
    for name, (steps, top1) in run['curves'].items():
      label = name if len(runs) == 1 else f'{run["label"]}: {name}'
      ax.plot(steps, top1, marker='o', label=label)
  if not ax.lines:
    _empty(ax, 'no probe results (run infomax_jax.probe)')
  ax.set(title='probe top-1 (step 0: initialisation)', xlabel='pretraining step',
         ylabel='top-1 accuracy (%)')
  for ax in axes:
    if ax.lines:
      ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
  _save(fig, path)


def plot_online(runs, path):
  """Thesis Fig. 5.1 from the training job: LDMI and online test accuracy against epoch."""
  fig, left = plt.subplots(figsize=(9, 4.5))
  right = left.twinx()
  for i, run in enumerate(runs):
    scalars, colour = run['scalars'], f'C{i}'
    if 'online/epoch' not in scalars:
      continue
    steps, epochs = scalars['online/epoch']
    epochs_per_step = epochs[-1] / steps[-1]
    if 'ldmi' in scalars:
      left.plot(scalars['ldmi'][0] * epochs_per_step, scalars['ldmi'][1], color=colour,
                label=f'{run["label"]}: LDMI')
    knn = sorted((int(t.split('_k')[1].split('_')[0]), t) for t in scalars
                 if t.startswith('online/knn_k') and t.endswith('_top1'))
    lines = [('online/linear_top1', '--o', 'online linear')]
    lines += [(knn[0][1], ':s', f'online kNN k={knn[0][0]}')] if knn else []
    for tag, style, name in lines:
      if tag in scalars:
        right.plot(scalars[tag][0] * epochs_per_step, scalars[tag][1], style, color=colour,
                   markersize=4, label=f'{run["label"]}: {name}')
  if not right.lines:
    _empty(left, 'no online evaluation (config.online_eval) in these runs')
  left.set(title='training LDMI and online test accuracy', xlabel='epoch',
           ylabel='LDMI (solid)')
  right.set(ylabel='test top-1 % (dashed: linear head, dotted: kNN)')
  handles = [h for ax in (left, right) for h in ax.get_legend_handles_labels()[0]]
  if handles:
    left.legend(handles=handles, fontsize=8, loc='lower right')
  left.grid(alpha=0.3)
  _save(fig, path)


def plot_eigenvalues(runs, path):
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for run in runs:
    values = np.maximum(run['eigenvalues'], EIGENVALUE_FLOOR)
    ax.semilogy(np.arange(1, len(values) + 1), values, label=f'{run["label"]}, step {run["step"]}')
  ax.set(title='eigenvalues of the projector-output covariance (test split)',
         xlabel='index (sorted)', ylabel='eigenvalue')
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3, which='both')
  _save(fig, path)


def plot_tsne(runs, path):
  fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 5.5), squeeze=False)
  for ax, run in zip(axes[0], runs):
    names = run['class_names']
    cmap = plt.get_cmap('tab10' if len(names) <= 10 else 'tab20' if len(names) <= 20 else 'turbo')
    colours = cmap(run['tsne_labels'] / max(len(names) - 1, 1) if len(names) > 20
                   else run['tsne_labels'])
    ax.scatter(*run['tsne'].T, c=colours, s=4)
    if len(names) <= 20:
      for c, name in enumerate(names):
        ax.scatter([], [], color=cmap(c), s=12, label=name)
      ax.legend(fontsize=7, markerscale=1.5, loc='best')
    ax.set(title=f'{run["label"]}, step {run["step"]}: t-SNE of encoder features',
           xticks=[], yticks=[])
  _save(fig, path)


def check_workdirs(workdirs, step=None):
  """Checks every workdir (config, checkpoint, architecture, labelled test split) before anything
  is computed or written; returns what write_plots draws from."""
  checked = []
  for workdir in workdirs:
    config = evaluation.load_config(workdir)
    manager, steps = evaluation.checkpoint_steps(workdir, 'latest' if step is None else step)
    evaluation.validate_checkpoint(config, manager)
    examples = evaluation.labelled_split(config.data, config.data.test_split)
    checked.append((workdir, config, manager, steps[-1], examples))
  return checked


def write_plots(checked, out, tsne_config):
  """Writes FILES into `out` for the workdirs of check_workdirs; returns their paths."""
  mesh = train.make_mesh()
  runs = []
  for workdir, config, manager, at, examples in checked:
    features, z, labels = test_embeddings(config, manager, at, examples, mesh)
    fraction = min(1.0, tsne_config.points / len(labels))
    chosen = evaluation.balanced_subset(labels, fraction, tsne_config.seed)[:tsne_config.points]
    runs.append(dict(
        label=_label(workdir, config), step=at,
        scalars=read_scalars(workdir, ('loss', 'ldmi'), prefixes=('online/',)),
        curves=accuracy_curves(evaluation.load_report(workdir)),
        eigenvalues=covariance_eigenvalues(z),
        class_names=examples.class_names, tsne_labels=labels[chosen],
        tsne=tsne.tsne(features[chosen], tsne_config.perplexity, tsne_config.exaggeration,
                       tsne_config.iterations, tsne_config.seed)))
  out = train.workdir_path(out)
  paths = [str(out / name) for name in FILES]
  if jax.process_index() == 0:
    out.mkdir(parents=True, exist_ok=True)
    for plot, path in zip((plot_training, plot_eigenvalues, plot_tsne, plot_online), paths):
      plot(runs, path)
  return paths


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.ERROR)
  paths = write_plots(check_workdirs(FLAGS.workdir, FLAGS.step), FLAGS.out, FLAGS.tsne)
  print('wrote ' + ', '.join(paths), flush=True)


if __name__ == '__main__':
  flags.DEFINE_multi_string('workdir', None, 'Pretraining workdir; repeat to overlay methods.')
  flags.DEFINE_string('out', None, 'Directory for the PNG files.')
  flags.DEFINE_string('step', None, 'Checkpoint step (default: the latest of each workdir).')
  config_flags.DEFINE_config_dict('tsne', evaluation_config.tsne_config(), 't-SNE settings.')
  flags.mark_flags_as_required(['workdir', 'out'])
  cli.run(main)
