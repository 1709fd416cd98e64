"""The method comparison of the thesis (Table 5.1, Figs. 5.1 and 5.3) under one fixed budget.

    python benchmarks/reproduce.py --config=configs/cifar10_miniature.py --root=/tmp/repro \
        [--losses=all] [--evaluations=linear,knn] [--curve] [--override=--config.x=y ...] \
        [--grid=config.x=1,2 --grid=config.y=a,b ...]

For every loss, the same pretraining command with only the loss name changed
(`python -m infomax_jax.main --config=<config>:<loss> --workdir=<root>/<loss> <overrides>`), then
the probe job on its latest checkpoint (and, for the first loss, on the initialisation: the
random-encoder baseline, the same for every loss since the encoder is initialised from the same
seed); `--curve` also probes every saved checkpoint with kNN, for the accuracy curve. Finally
`<root>/results.json`, `<root>/results.md` (the table, side by side with the thesis Table 5.1
column of the data set) and the overlaid figures `<root>/training.png` (loss, LDMI, accuracy
against step) and `<root>/eigenvalues.png` (spectra) are written.

`--grid` makes it a sweep: every loss runs once per point of the grid (the Cartesian product of
the listed values, each passed as `--config.x=value`; a value with commas goes in parentheses or
brackets, e.g. `--grid='config.projector.dims=(512,64),(1024,64)'`), in its own workdir
`<root>/<loss>__x=1__y=a`, and the table has one row per point (`<loss> x=1 y=a`); the random
encoder's row is the first point's initialisation.

Every stage is resumable: pretraining resumes from its checkpoints and the probe skips results it
has, so rerunning the command after an interruption finishes the table. The commands run are
printed, so any row can be rerun by hand.
"""
import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from infomax_jax import losses  # pylint: disable=g-import-not-at-top,wrong-import-position
from infomax_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position

# Thesis Table 5.1 (TRAINING.md): linear-probe top-1 %, by data set of the config file.
THESIS_TABLE_5_1 = {
    'cifar10': {'simclr': 91.80, 'spectral': 92.07, 'barlow': 92.10, 'vicreg': 92.07,
                'corinfomax': 93.18},
    'cifar100': {'simclr': 66.83, 'spectral': 66.18, 'barlow': 70.90, 'vicreg': 68.54,
                 'corinfomax': 71.61},
    'tiny_imagenet': {'simclr': 48.12, 'spectral': 49.86, 'corinfomax': 54.86},
    'imagenet100': {'simclr': 77.04, 'barlow': 80.38, 'vicreg': 79.40, 'corinfomax': 80.48},
    'imagenet1k': {'simclr': 66.5, 'spectral': 66.97, 'barlow': 68.7, 'vicreg': 68.6,
                   'corinfomax': 69.08},
}
DATASET_OF_CONFIG = {'demo': 'cifar10', 'cifar10_miniature': 'cifar10'}
# The linear column is the thesis protocol (`linear`: fresh augmented views every epoch) or, with
# probe.augment=False (the CPU demo), the cached-feature probe (`linear_cached`), named as such.
COLUMNS = (('linear', 'top1', 'linear top-1'), ('linear', 'top5', 'linear top-5'),
           ('knn_k20', 'top1', 'kNN k=20'), ('knn_k200', 'top1', 'kNN k=200'))


def columns(reports):
  """COLUMNS, with the cached-feature linear probe where no report has the thesis protocol's."""
  if any('linear' in r for r in reports) or not any('linear_cached' in r for r in reports):
    return COLUMNS
  return tuple(('linear_cached', metric, title.replace('linear', 'linear (cached)'))
               if evaluation == 'linear' else (evaluation, metric, title)
               for evaluation, metric, title in COLUMNS)


class RunFailed(Exception):
  """A command exited with an error; the message is its `error: ...` line or its last line."""


def run(command, log_path):
  """Runs `command`, streaming its output into `log_path`; raises RunFailed if it fails."""
  print('$ ' + ' '.join(command), flush=True)
  lines = []
  with open(log_path, 'a') as log:
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
      log.write(line)
      log.flush()
      lines.append(line.rstrip())
  progress = [l for l in lines if l.startswith(('step ', 'error'))]
  if progress:
    print('  ' + progress[-1], flush=True)
  if process.wait():
    errors = [l for l in lines if l.startswith('error')]
    raise RunFailed((errors or lines or [f'exit status {process.returncode}'])[-1])


def split_values(values):
  """'1,(2,3),[4, 5]' → ['1', '(2,3)', '[4, 5]']: commas inside parentheses or brackets stay."""
  parts, depth, current = [], 0, ''
  for char in values:
    depth += (char in '([') - (char in ')]')
    if char == ',' and depth == 0:
      parts.append(current)
      current = ''
    else:
      current += char
  if depth or not all(parts + [current]):
    raise SystemExit(f'error: --grid values {values!r}: empty or unbalanced')
  return parts + [current]


def grid_points(grid):
  """The `--grid` arguments ('config.x=1,2') → one [(key, value), ...] per point of their
  Cartesian product, keys without the 'config.' prefix ([[]]: no grid, one point)."""
  axes = []
  for argument in grid:
    key, sep, values = argument.removeprefix('--').partition('=')
    key = key.removeprefix('config.')
    if not sep or not key or not values:
      raise SystemExit(f'error: --grid={argument}: expected config.x=value1,value2,...')
    axes.append([(key, value) for value in split_values(values)])
  return [list(point) for point in itertools.product(*axes)]


def row_name(loss, point):
  return ' '.join([loss] + [f'{key}={value}' for key, value in point])


def workdir_name(loss, point):
  name = '__'.join([loss] + [f'{key}={value}' for key, value in point])
  return re.sub(r'[^A-Za-z0-9_.=+-]', '_', name)


def pretrain_and_probe(args, loss, point, with_random):
  """Pretrains and probes one loss at one grid point; returns (report, pretraining seconds, error
  or None). A run that stops (e.g. the divergence guard) is a row of the table, not the end of
  the comparison."""
  workdir = os.path.join(args.root, workdir_name(loss, point))
  os.makedirs(workdir, exist_ok=True)
  log = os.path.join(workdir, 'reproduce.log')
  timing_path = os.path.join(workdir, 'pretrain_seconds.json')
  start = time.time()
  try:
    run([sys.executable, '-m', 'infomax_jax.main', f'--config={args.config}:{loss}',
         f'--workdir={workdir}', *args.override,
         *[f'--config.{key}={value}' for key, value in point]], log)
  except RunFailed as failure:
    print(f'  {row_name(loss, point)}: pretraining failed, kept in the table as such', flush=True)
    return None, time.time() - start, str(failure)
  if not os.path.exists(timing_path):   # the first, uninterrupted run's wall time
    with open(timing_path, 'w') as f:
      json.dump({'seconds': time.time() - start}, f)
  encoders = 'trained,random' if with_random else 'trained'
  probe = [sys.executable, '-m', 'infomax_jax.probe', f'--workdir={workdir}', '--noplots',
           f'--encoders={encoders}', *args.probe_override]
  run(probe + [f'--evaluations={args.evaluations}'], log)
  if args.curve:
    run(probe + ['--evaluations=knn', '--step=all'], log)
  with open(os.path.join(workdir, 'probe.json')) as f:
    report = json.load(f)
  with open(timing_path) as f:
    seconds = json.load(f)['seconds']
  return report, seconds, None


def latest(report, evaluation, encoder):
  runs = report.get(evaluation, {}).get(encoder, {})
  return runs[max(runs, key=int)] if runs else None


def environment(workdir):
  """The host of the run's latest start (environment.json, written by the training job)."""
  path = os.path.join(workdir, train.ENVIRONMENT)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    entries = json.load(f)
  return entries[-1] if entries else None


def table(args, rows, random_report, environments=None):
  """(results dict, markdown) of the rows {row name: (report, seconds, error)} and the random
  baseline; a row name is the loss, followed by its grid point's values in a sweep. Each row of
  the results dict carries its run's host (`environments`: row name → environment())."""
  name = os.path.basename(args.config)[:-3]
  dataset = DATASET_OF_CONFIG.get(name, name)
  thesis = THESIS_TABLE_5_1.get(dataset, {})
  results = {'config': args.config, 'override': args.override,
             'grid': args.grid, 'dataset': dataset, 'rows': {}}
  shown = columns([report for report, _, _ in rows.values() if report] + [random_report or {}])
  header = ['method'] + [title for _, _, title in shown] + ['pretrain min',
                                                            f'thesis {dataset} top-1']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  entries = [(loss, report, 'trained', seconds, error)
             for loss, (report, seconds, error) in rows.items()]
  entries.append(('random init', random_report or {}, 'random', 0.0, None))
  for method, report, encoder, seconds, error in entries:
    loss = method.split(' ')[0]
    values = {}
    for evaluation, metric, title in shown:
      result = None if error else latest(report, evaluation, encoder)
      values[title] = None if result is None else round(result[metric], 2)
    results['rows'][method] = dict(values, pretrain_seconds=round(seconds, 1),
                                   thesis_top1=thesis.get(loss), error=error,
                                   environment=(environments or {}).get(method))
    if error:
      cells = [method, f'stopped: {error.removeprefix("error: ")}'] + [''] * (len(shown) - 1)
    else:
      cells = [method] + ['–' if v is None else f'{v:.2f}' for v in values.values()]
    cells += [f'{seconds / 60:.1f}' if seconds else '–',
              f'{thesis[loss]:.2f}' if loss in thesis else '–']
    lines.append('| ' + ' | '.join(cells) + ' |')
  hosts = {(e['cpu'], ' '.join(e['cpu_isa']), e['backend'], e['jax'])
           for e in (environments or {}).values() if e}
  lines += [f'\npretrained on {cpu} ({isa or "no listed ISA"}), {backend}, jax {version}'
            for cpu, isa, backend, version in sorted(hosts)]
  return results, '\n'.join(lines) + '\n'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='config file, without the :argument')
  parser.add_argument('--root', required=True, help='one workdir per loss is made under it')
  parser.add_argument('--losses', default='all', help="comma-separated names, or 'all'")
  parser.add_argument('--evaluations', default='linear,knn')
  parser.add_argument('--curve', action='store_true',
                      help='kNN on every saved checkpoint, for the accuracy curve')
  parser.add_argument('--override', action='append', default=[],
                      help='passed to every pretraining command, e.g. --override=--config.seed=1')
  parser.add_argument('--probe_override', action='append', default=[],
                      help='passed to every probe command, e.g. --probe_override=--probe.epochs=50')
  parser.add_argument('--grid', action='append', default=[],
                      help='a sweep axis, e.g. --grid=config.optimizer.peak_lr=0.25,0.5: every '
                      'loss runs at every point of the product of the axes')
  args = parser.parse_args()
  points = grid_points(args.grid)
  names = losses.names() if args.losses == 'all' else args.losses.split(',')
  for name in names:
    losses.get(name)   # unknown names fail before anything runs
  if not os.path.isfile(args.config):
    raise SystemExit(f'error: config file not found: {args.config}')
  os.makedirs(args.root, exist_ok=True)

  rows, random_report, trained, environments = {}, None, [], {}
  for loss in names:
    for point in points:
      row = rows[row_name(loss, point)] = pretrain_and_probe(args, loss, point,
                                                             with_random=random_report is None)
      random_report = random_report or row[0]
      workdir = os.path.join(args.root, workdir_name(loss, point))
      environments[row_name(loss, point)] = environment(workdir)
      if not row[2]:
        trained.append(workdir)
  results, markdown = table(args, rows, random_report, environments)
  with open(os.path.join(args.root, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(args.root, 'results.md'), 'w') as f:
    f.write(markdown)
  run([sys.executable, '-m', 'infomax_jax.plots', f'--out={args.root}',
       *[f'--workdir={w}' for w in trained]], os.path.join(args.root, 'plots.log'))
  print('\n' + markdown + f'\nwrote {args.root}/results.json, results.md, training.png, '
        'eigenvalues.png', flush=True)


if __name__ == '__main__':
  main()
