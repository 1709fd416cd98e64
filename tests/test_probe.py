"""Evaluation suite: kNN and t-SNE maths, then every mode, the report, the figures and the errors
of the probe job on one tiny pretraining run (checkpoints at steps 20 and 40)."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
from absl import flags
from ml_collections import config_flags
from PIL import Image
import pytest
import scipy.optimize

from configs import imagenet1k
from infomax_jax import cli
from infomax_jax import evaluation
from infomax_jax import input_pipeline
from infomax_jax import knn
from infomax_jax import plots
from infomax_jax import probe
from infomax_jax import evaluation_config
from infomax_jax import train
from infomax_jax import tsne
from tests.tiny import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def eval_config(**overrides):
  """tiny_config pretrained for 40 steps (BatchNorm running statistics settle; after 4 steps the
  inference-mode features reach 1e9), checkpoints at 20 and 40; protocols cut to seconds."""
  return tiny_config(**{'total_steps': 40, 'checkpoint_every_steps': 20, 'log_every_steps': 20,
                        'probe.semi.epochs': 1, 'probe.tsne.points': 200,
                        'probe.tsne.iterations': 250, **overrides})


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('pretrained'))
  train.train_and_evaluate(eval_config(), workdir)
  return workdir


@pytest.fixture
def workdir(pretrained, tmp_path):
  path = str(tmp_path / 'run')
  shutil.copytree(pretrained, path)
  return path


def test_knn_matches_brute_force():
  rng = np.random.default_rng(0)
  train_x, test_x = rng.normal(size=(1037, 16)), rng.normal(size=(211, 16))
  train_y = rng.integers(0, 7, len(train_x))
  sims, indices = knn.neighbours(train_x, test_x, k=30, chunk_size=100)   # 11 × 3 chunks
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  cosine = unit(test_x) @ unit(train_x).T
  nearest = np.argsort(-cosine, axis=1)[:, :30]
  np.testing.assert_array_equal(indices, nearest)
  np.testing.assert_allclose(sims, np.take_along_axis(cosine, nearest, 1), atol=1e-5)
  expected = np.zeros((len(test_x), 7))
  for row in range(len(test_x)):
    for j in nearest[row, :20]:   # votes exp(sim / T), divided by the nearest one's
      expected[row, train_y[j]] += np.exp((cosine[row, j] - cosine[row, nearest[row, 0]]) / 0.07)
  np.testing.assert_allclose(knn.class_scores(sims, indices, train_y, 7, 20, 0.07), expected,
                             rtol=1e-4)


def test_knn_weights_stay_finite_at_small_temperature():
  """exp(sim / T) overflows float32 below T ≈ 0.0113; the row-relative weights rank the classes as
  float64 exp(sim / T) does."""
  rng = np.random.default_rng(1)
  sims = -np.sort(-rng.uniform(0.2, 1.0, size=(50, 20)), axis=1).astype(np.float32)
  indices = rng.integers(0, 100, size=(50, 20))
  train_y = rng.integers(0, 5, 100)
  for temperature in (0.005, 0.001):
    scores = knn.class_scores(sims, indices, train_y, 5, 20, temperature)
    assert np.all(np.isfinite(scores)) and np.all(scores.max(axis=1) >= 1.0)
    exact = np.zeros((50, 5))
    np.add.at(exact, (np.arange(50)[:, None], train_y[indices]),
              np.exp((sims.astype(np.float64) - sims[:, :1]) / temperature))
    np.testing.assert_array_equal(np.argmax(scores, axis=1), np.argmax(exact, axis=1))


def test_topk_accuracy_does_not_depend_on_class_order():
  """kNN scores of classes without a vote tie at 0: top-k counts the expected hit under a random
  tie-break, whatever the order of the classes."""
  scores = np.array([[5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],    # true class 6 ties with 5 others
                     [0.0, 3.0, 3.0, 0.0, 0.0, 0.0, 0.0],    # true class 1 ties with class 2
                     [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])   # true class 0 is last
  labels = np.array([6, 1, 0])
  result = evaluation.topk_accuracy(scores, labels, ks=(1, 2, 5))
  # row 0: g = 1, e = 5 → top-2 1/6, top-5 4/6; row 1: top-1 1/2, top-2 1; row 2: 0.
  np.testing.assert_allclose([result['top1'], result['top2'], result['top5']],
                             [100 * 0.5 / 3, 100 * (1 / 6 + 1) / 3, 100 * (4 / 6 + 1) / 3])
  for permutation in (np.arange(7)[::-1], np.random.default_rng(0).permutation(7)):
    inverse = np.argsort(permutation)
    assert evaluation.topk_accuracy(scores[:, permutation], inverse[labels], (1, 2, 5)) == result


def test_tsne_calibrates_perplexity_and_separates_clusters():
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(loc=8.0 * c, size=(60, 10)) for c in range(3)]).astype(np.float32)
  p = np.asarray(tsne.conditional_affinities(x, 20.0), np.float64)
  np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
  entropy = -np.sum(p * np.log(np.maximum(p, 1e-30)), axis=1)
  np.testing.assert_allclose(np.exp(entropy), 20.0, rtol=1e-3)
  y = tsne.tsne(x, perplexity=20.0, iterations=500)
  labels = np.repeat(np.arange(3), 60)
  distances = np.sum((y[:, None] - y[None]) ** 2, axis=-1)
  np.fill_diagonal(distances, np.inf)
  assert np.all(labels[np.argmin(distances, axis=1)] == labels)


def test_balanced_subset_is_fixed_and_balanced():
  labels = np.repeat(np.arange(4), [100, 100, 50, 10])
  subset = evaluation.balanced_subset(labels, 0.1, seed=0)
  assert np.bincount(labels[subset]).tolist() == [10, 10, 5, 1]
  np.testing.assert_array_equal(subset, evaluation.balanced_subset(labels, 0.1, seed=0))


def test_linear_schedules():
  config = evaluation_config.probe_config()
  cosine = probe.linear_schedule(config, steps_per_epoch=10)          # 100 epochs
  np.testing.assert_allclose([cosine(0), cosine(1000)], [0.2, 0.002], rtol=1e-5)
  config.schedule = 'step'                                             # ImageNet-1K
  step = probe.linear_schedule(config, steps_per_epoch=10)
  np.testing.assert_allclose([step(0), step(199), step(200), step(999)], [25, 25, 2.5, 25e-4],
                             rtol=1e-5)


def _probe_section(config, *args):
  """probe.main's protocol for `config` and the command-line arguments `args`."""
  argv = ['probe', *args]
  values = flags.FlagValues()
  config_flags.DEFINE_config_dict('probe', evaluation_config.probe_config(), '',
                                  flag_values=values, sys_argv=argv)
  values(argv)
  return probe.probe_section(config, values.probe, cli.overridden_fields(argv, 'probe'))


def test_probe_keeps_the_configs_section_and_flags_override_single_fields():
  imagenet = imagenet1k.get_config('r50,corinfomax')
  section = _probe_section(imagenet)
  assert (section.schedule, section.step_lr, section.step_epochs) == ('step', 25.0, 20)
  step = probe.linear_schedule(section, steps_per_epoch=10)
  np.testing.assert_allclose([step(0), step(200)], [25, 2.5], rtol=1e-6)
  section = _probe_section(imagenet, '--probe.epochs=3', '--probe.knn.temperature=0.1')
  assert (section.epochs, section.knn.temperature) == (3, 0.1)
  assert (section.schedule, section.step_lr, section.knn.k) == ('step', 25.0, imagenet.probe.knn.k)
  demo = tiny_config()
  assert _probe_section(demo, '--probe.lr=0.5').to_dict() == dict(demo.probe.to_dict(), lr=0.5)


def _dominant_direction_features(n, seed, classes=10, dim=32):
  """Linearly separable classes (unit-variance means, noise 0.35) at 1/50 of the scale of a shared
  positive direction with random magnitude: mean norm 14, covariance condition ~1e5, like a
  random ReLU encoder's features (issue: condition 1.5e6, norm 14.4)."""
  rng = np.random.default_rng(seed)
  means = np.random.default_rng(123).normal(size=(classes, dim))
  y = rng.integers(0, classes, n)
  direction = np.abs(np.random.default_rng(7).normal(size=dim))
  direction /= np.linalg.norm(direction)
  x = 0.02 * (means[y] + 0.35 * rng.normal(size=(n, dim)))
  x += (14.0 + 2.0 * rng.normal(size=(n, 1))) * direction
  return x.astype(np.float32), y


def _logistic_regression_accuracy(train, test, classes):
  """Test top-1 of the (nearly unregularised) multinomial logistic regression optimum, by L-BFGS
  in float64: the accuracy a converged linear probe reaches."""
  (x, y), (test_x, test_y) = train, test
  mean, std = x.mean(0), x.std(0)
  design = lambda f: np.hstack([(f - mean) / std, np.ones((len(f), 1))])
  a = design(x.astype(np.float64))

  def objective(w):
    w = w.reshape(a.shape[1], classes)
    logits = a @ w
    logits -= logits.max(1, keepdims=True)
    log_z = np.log(np.exp(logits).sum(1))
    p = np.exp(logits - log_z[:, None])
    p[np.arange(len(y)), y] -= 1
    value = np.mean(log_z - logits[np.arange(len(y)), y]) + 1e-6 * np.sum(w**2)
    return value, (a.T @ p / len(y) + 2e-6 * w).ravel()

  w = scipy.optimize.minimize(objective, np.zeros(a.shape[1] * classes), jac=True,
                              method='L-BFGS-B', options=dict(maxiter=2000)).x
  predictions = np.argmax(design(test_x.astype(np.float64)) @ w.reshape(-1, classes), axis=1)
  return 100 * np.mean(predictions == test_y)


def test_linear_probe_reaches_the_optimum_on_ill_conditioned_features():
  train, test = _dominant_direction_features(2000, 0), _dominant_direction_features(1000, 1)
  optimum = _logistic_regression_accuracy(train, test, 10)
  assert optimum == 100.0
  config = eval_config(**{'probe.epochs': 20}).probe
  standardized = probe.linear_probe(config, lambda _: train, test, 10, seed=0)
  config.standardize = False
  raw = probe.linear_probe(config, lambda _: train, test, 10, seed=0)
  assert standardized['top1'] >= optimum - 0.5, (standardized, optimum)
  assert raw['top1'] < optimum - 20, raw   # measured 20.5 %: what the test guards against


def test_linear_probe_divergence_is_an_error():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(64, 8)).astype(np.float32) * 1e20, rng.integers(0, 3, 64)
  with pytest.raises(FloatingPointError, match='the linear probe diverged'):
    probe.linear_probe(eval_config(**{'probe.standardize': False}).probe, lambda _: (x, y),
                       (x, y), 3, seed=0)


def _assert_png(path):
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  with Image.open(path) as image:
    image.verify()
  with Image.open(path) as image:
    assert min(image.size) > 300


@pytest.mark.slow   # ~90 s on a cold 2-core CI run: with the slow tests, in CI's second pass
def test_every_step_report_figures_rerun_and_force(workdir, monkeypatch, capsys):
  config = eval_config()
  report = probe.run_probe(config, workdir, evaluations=('linear', 'knn'), step='all')
  assert evaluation.load_report(workdir) == report
  assert sorted(report) == ['knn_k20', 'knn_k200', 'linear_cached']   # the demo's fast option
  for encoders in report.values():
    assert {e: list(steps) for e, steps in encoders.items()} == {
        'trained': ['20', '40'], 'random': ['0']}
    for result in (encoders['trained']['40'], encoders['random']['0']):
      assert 15 < result['top1'] <= result['top5'] <= 100   # chance: 10 % top-1
  assert report['linear_cached']['trained']['40']['protocol'] == dict(
      epochs=2, batch_size=256, momentum=0.9, schedule='cosine', lr=0.2, min_lr=0.002,
      standardize=True, augment=False)
  assert report['knn_k200']['random']['0']['protocol'] == dict(k=200, temperature=0.07,
                                                                ties='expected')
  steps, top1 = plots.accuracy_curves(report)['knn_k20']
  assert steps.tolist() == [0, 20, 40] and np.all((top1 > 0) & (top1 <= 100))
  scalars = plots.read_scalars(workdir)
  assert scalars['loss'][0].tolist() == scalars['ldmi'][0].tolist() == [20, 40]
  for name in plots.FILES:
    _assert_png(os.path.join(workdir, name))

  evaluated = []
  real = probe.evaluate_encoder
  monkeypatch.setattr(probe, 'evaluate_encoder',
                      lambda *args: evaluated.append(sorted(args[2])) or real(*args))
  assert probe.run_probe(config, workdir, evaluations=('linear', 'knn'), step='all',
                         write_plots=False) == report
  assert evaluated == [] and 'already in probe.json' in capsys.readouterr().out
  config.probe.knn.temperature = 0.1        # a changed protocol redoes only what it changes
  probe.run_probe(config, workdir, encoders=('trained',), write_plots=False,
                  evaluations=('linear', 'knn'))
  assert evaluated == [['knn_k20', 'knn_k200']]
  evaluated.clear()
  forced = probe.run_probe(config, workdir, encoders=('random',), evaluations=('knn',),
                           force=True, write_plots=False)
  assert evaluated == [['knn_k20', 'knn_k200']]
  assert forced['knn_k20']['random']['0']['protocol']['temperature'] == 0.1
  assert forced['knn_k20']['trained']['20'] == report['knn_k20']['trained']['20']


def test_default_linear_probe_draws_augmented_views_every_epoch(workdir, monkeypatch):
  assert evaluation_config.probe_config().augment   # the thesis protocol is the default
  epochs, real = [], input_pipeline.probe_dataset

  def recording(*args, train, **kwargs):
    epochs.append((train, kwargs.get('epoch')))
    return real(*args, train=train, **kwargs)

  monkeypatch.setattr(input_pipeline, 'probe_dataset', recording)
  report = probe.run_probe(eval_config(**{'probe.augment': True}), workdir, encoders=('trained',),
                           evaluations=('linear',), write_plots=False)
  assert list(report) == ['linear'] and report['linear']['trained']['40']['protocol']['augment']
  assert 15 < report['linear']['trained']['40']['top1'] <= 100
  assert [e for train, e in epochs if train] == [0, 1]   # tiny config: 2 epochs, fresh views each


def test_semi_supervised_fine_tuning(workdir):
  names = probe.protocols(evaluation_config.probe_config(), ('semi',))
  assert {n: p['head_lr'] for n, (_, p) in names.items()} == {'semi_1pct': 30.0, 'semi_10pct': 20.0}
  config = eval_config(**{'probe.semi.fractions': (0.01,), 'probe.semi.head_lrs': (30.0,)})
  report = probe.run_probe(config, workdir, encoders=('trained',), evaluations=('semi',),
                           write_plots=False)
  result = report['semi_1pct']['trained']['40']
  assert (result['examples'], result['batch_size']) == (100, 96)   # 10 a class; 8 devices
  assert result['protocol']['fraction'] == 0.01 and result['protocol']['epochs'] == 1
  assert 0 <= result['top1'] <= result['top5'] <= 100


def test_semi_supervised_official_options(workdir, tmp_path):
  """The official script's choices: a listed subset (SimCLR's files), head lr 10, best epoch."""
  train_examples = input_pipeline.load_split(eval_config().data, 'train')
  listed = ['/'.join(n.split('/')[-2:]) for n in train_examples.names[::100]]   # class/file
  subset_file = tmp_path / '1percent.txt'
  subset_file.write_text('\n'.join(listed) + '\n')
  config = eval_config(**{'probe.semi.fractions': (0.01,), 'probe.semi.head_lrs': (10.0,),
                          'probe.semi.select': 'best', 'probe.semi.epochs': 2,
                          'probe.semi.subset_files': (str(subset_file),)})
  report = probe.run_probe(config, workdir, encoders=('trained',), evaluations=('semi',),
                           write_plots=False)
  result = report['semi_1pct']['trained']['40']
  assert result['examples'] == 100 and result['epoch'] in (1, 2)
  assert result['protocol']['select'] == 'best'
  assert result['protocol']['subset_file'] == str(subset_file)
  np.testing.assert_array_equal(evaluation.listed_subset(train_examples, subset_file),
                                np.arange(0, 10000, 100))
  for lines, message in ((['no/such.jpg'], '1 of its 1 entries are not in the train split'),
                         (['0000.jpg'], 'match several images')):   # one per class
    (tmp_path / 'bad.txt').write_text('\n'.join(lines))
    with pytest.raises(ValueError, match=message):
      evaluation.listed_subset(train_examples, tmp_path / 'bad.txt')


def test_plots_command_overlays_workdirs(pretrained, workdir, tmp_path):
  out = tmp_path / 'figures'
  result = subprocess.run(
      [sys.executable, '-m', 'infomax_jax.plots', f'--workdir={pretrained}',
       f'--workdir={workdir}', f'--out={out}', '--tsne.points=100', '--tsne.iterations=100'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  for name in plots.FILES:
    _assert_png(out / name)


def _break(workdir, tmp_path, case):
  """Makes `workdir` fail in one way; returns the expected error."""
  if case == 'no checkpoint':
    shutil.rmtree(os.path.join(workdir, 'checkpoints'))
    return f'no checkpoint in {workdir}/checkpoints'
  config = evaluation.load_config(workdir)
  if case == 'architecture':
    config.model.width = 0.25
    expected = 'does not match the config: '
  else:
    for split in ('train', 'test'):
      os.makedirs(tmp_path / 'unlabelled' / split / 'images')
      for i in range(8):
        Image.new('RGB', (16, 16), (30 * i, 0, 0)).save(
            tmp_path / 'unlabelled' / split / 'images' / f'{i}.png')
    config.data.source, config.data.path = 'folder', str(tmp_path / 'unlabelled')
    expected = "of data source 'folder' has no labels: all 8 images are in one class"
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort())
  return expected


@pytest.mark.parametrize('case', ['no checkpoint', 'architecture', 'no labels'])
def test_errors_write_nothing(workdir, tmp_path, case):
  expected = _break(workdir, tmp_path, case)
  before = sorted(os.listdir(workdir))
  with pytest.raises((ValueError, FileNotFoundError), match=re.escape(expected)):
    probe.run_probe(evaluation.load_config(workdir), workdir)
  with pytest.raises((ValueError, FileNotFoundError), match=re.escape(expected)):
    plots.check_workdirs([workdir])
  assert sorted(os.listdir(workdir)) == before


def test_command_error_is_one_line(workdir, tmp_path):
  expected = _break(workdir, tmp_path, 'no checkpoint')
  result = subprocess.run([sys.executable, '-m', 'infomax_jax.probe', f'--workdir={workdir}'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == f'error: {expected}'
  assert not os.path.exists(os.path.join(workdir, evaluation.REPORT))
