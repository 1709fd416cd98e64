"""Online evaluation during pretraining (issue #18): the head never touches the encoder, learns
what is linearly separable, is the same on 1 and 8 devices, and is resumed with the state
(tests/test_train.py::test_resume_equals_uninterrupted_run)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infomax_jax import input_pipeline
from infomax_jax import models
from infomax_jax import online_eval
from infomax_jax import train
from infomax_jax import validation
from tests.tiny import tiny_config


@pytest.fixture(scope='module')
def sample():
  config = tiny_config()
  return (input_pipeline.load_split(config.data, 'train'),
          input_pipeline.load_split(config.data, 'test'))


def _state_and_step(config, examples, devices, num_classes):
  mesh = train.make_mesh(devices)
  model = models.build_model(config)
  tx = train.make_optimizer(config, len(examples))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = jax.jit(functools.partial(train.create_train_state, config, model, tx,
                                    num_classes=num_classes),
                  out_shardings=replicated)(jax.random.key(config.seed))
  return mesh, model, state, train.compile_train_step(config, model, tx, mesh, num_steps=4)


def _batches(config, examples, steps, mesh):
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(train.DATA_AXIS))
  dataset = input_pipeline.pretrain_dataset(examples, config, local_devices=len(mesh.devices),
                                            labels=True)
  return [train.global_batch(b, sharded) for b in dataset.take(steps).as_numpy_iterator()]


@pytest.mark.slow   # two tiny runs of two steps, ~30 s
def test_online_head_does_not_reach_the_encoder(sample):
  """Two steps with and without the head: every parameter, BatchNorm statistic and loss state
  is the same bit for bit."""
  config = tiny_config()
  states = {}
  for num_classes in (0, 10):
    mesh, _, state, step = _state_and_step(config, sample[0], jax.devices()[:1], num_classes)
    for batch in _batches(config, sample[0], 2, mesh):
      state, metrics = step(state, batch)
    states[num_classes] = jax.device_get(state)
  assert 'online/train_loss' in metrics and states[10].online and not states[0].online
  # the second step (step 1 of num_steps=4) trained the head at the cosine's lr·(1 + cos(π/4))/2
  np.testing.assert_allclose(metrics['online/lr'], 0.1 * (1 + np.cos(np.pi / 4)) / 2, rtol=1e-6)
  for field in ('params', 'batch_stats', 'loss_state'):
    for a, b in zip(jax.tree.leaves(getattr(states[0], field)),
                    jax.tree.leaves(getattr(states[10], field))):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('standardize', [False, True])
def test_online_head_learns_a_linearly_separable_set(standardize):
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(5, 32)) * 3

  def draw(n):
    labels = rng.integers(0, 5, n)
    return (centres[labels] + rng.normal(size=(n, 32))).astype(np.float32), labels.astype(np.int32)

  config = tiny_config(**{'online_eval.standardize': standardize}).online_eval
  online = online_eval.init(config, 5, 32, jax.random.key(0))
  assert ('batch_stats' in online) == standardize
  step = jax.jit(functools.partial(online_eval.train_head, online_config=config, num_steps=200))
  for i in range(200):
    online, metrics = step(online, *draw(64), step=i)
  x, y = draw(2000)
  logits = np.asarray(online_eval.logits(online, x))
  assert np.mean(np.argmax(logits, 1) == y) >= 0.995 and float(metrics['online/train_top1']) > 98


def test_head_learning_rate_follows_its_schedule():
  """'cosine': lr at step 0, half of it midway, 0 at the run's end; 'constant': lr throughout;
  an unknown schedule is a one-line config error."""
  config = tiny_config(**{'online_eval.lr': 0.3}).online_eval
  rate = jax.jit(functools.partial(online_eval.learning_rate, config, num_steps=100))
  np.testing.assert_allclose([rate(s) for s in (0, 50, 100)], [0.3, 0.15, 0.0], atol=1e-7)
  config.lr_schedule = 'constant'
  np.testing.assert_allclose([online_eval.learning_rate(config, s, 100) for s in (0, 99)], 0.3)
  with pytest.raises(ValueError, match='online_eval.lr_schedule=.linear. is not one of cosine'):
    validation.validate_config(tiny_config(**{'online_eval.enabled': True,
                                            'online_eval.lr_schedule': 'linear'}))


def test_standardized_head_sees_standardized_features():
  """With `standardize`, training normalises by the batch's mean and variance and evaluation by
  their running averages (momentum 0.9): features shifted and scaled by any affine map of each
  dimension give the same logits."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(256, 8)).astype(np.float32)
  y = rng.integers(0, 3, 256).astype(np.int32)
  shift, scale = rng.normal(size=8) * 10, np.exp(rng.normal(size=8))
  config = tiny_config(**{'online_eval.standardize': True}).online_eval
  heads = []
  for features in (x, (x * scale + shift).astype(np.float32)):
    online = online_eval.init(config, 3, 8, jax.random.key(0))
    for i in range(30):
      online, _ = online_eval.train_head(online, features, y, config, step=i, num_steps=30)
    heads.append((online, features))
  stats = heads[1][0]['batch_stats']['standardize']
  np.testing.assert_allclose(stats['mean'], (1 - 0.9 ** 30) * (x * scale + shift).mean(0),
                             rtol=1e-4)
  # float32 rounding of the shifted features (|shift| up to 20) and eps = 1e-6 through 30 steps:
  # measured 2.5e-5 (kernel entries up to 0.40); bound 10×
  np.testing.assert_allclose(heads[0][0]['params']['linear']['kernel'],
                             heads[1][0]['params']['linear']['kernel'], atol=2.5e-4)


@pytest.mark.slow   # two meshes, each compiling the step and the evaluation, ~60 s
def test_one_and_eight_devices_give_the_same_online_metrics(sample):
  """The head's training metrics after 2 steps and the in-loop evaluation of that state.

  Measured differences between the meshes: train loss 3e-7 relative, evaluation accuracies equal
  (the features differ by float32 rounding, ~1e-6, which moves no decision here); bounds: 1e-5
  relative for the loss, 0.1 points for an accuracy (one test image in 2,000 is 0.05)."""
  config = tiny_config()
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh, model, state, step = _state_and_step(config, sample[0], devices, 10)
    for batch in _batches(config, sample[0], 2, mesh):
      state, metrics = step(state, batch)
    evaluator = online_eval.Evaluator(config, model, mesh, sample[0], sample[1])
    results.append((jax.device_get(metrics), evaluator(state)))
  (train_1, eval_1), (train_8, eval_8) = results
  np.testing.assert_allclose(train_8['online/train_loss'], train_1['online/train_loss'], rtol=1e-5)
  assert eval_1.keys() == eval_8.keys() and {'online/linear_top1', 'online/knn_k20_top1',
                                             'online/knn_k200_top5'} <= eval_1.keys()
  for key in eval_1:
    assert abs(eval_1[key] - eval_8[key]) <= 0.1, (key, eval_1[key], eval_8[key])


def test_host_shards_cover_each_split_once(sample):
  for hosts in (1, 3):
    shards = [online_eval.host_shard(sample[1], p, hosts) for p in range(hosts)]
    assert len({len(s) for s, _ in shards}) == 1   # every host runs the same number of batches
    names = [s.names[i] for s, valid in shards for i in np.flatnonzero(valid)]
    assert names == list(sample[1].names)


@pytest.mark.slow   # a tiny run, ~15 s
def test_synthetic_source_trains_without_online_evaluation(tmp_path, capsys):
  config = tiny_config(**{'data.source': 'synthetic', 'total_steps': 2,
                          'online_eval.enabled': True})
  state = train.train_and_evaluate(config, str(tmp_path))
  assert not state.online
  assert "online evaluation off: data source 'synthetic' has no labels" in capsys.readouterr().out


@pytest.mark.slow   # a tiny run with two evaluations, ~40 s
def test_evaluator_reports_in_the_progress_line_and_tensorboard(tmp_path, capsys):
  config = tiny_config(**{'online_eval.enabled': True, 'online_eval.every_steps': 2})
  train.train_and_evaluate(config, str(tmp_path))
  lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith('step ')]
  assert len(lines) == 2 and all(' online linear ' in l and ' kNN ' in l for l in lines)
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(str(tmp_path)).Reload()
  tags = set(events.Tags()['tensors']) | set(events.Tags()['scalars'])
  assert {'online/linear_top1', 'online/knn_k20_top1', 'online/eval_seconds',
          'online/train_top1', 'online/epoch'} <= tags
  # Fig. 5.1 from the run: LDMI and online accuracy against epoch
  from infomax_jax import plots  # pylint: disable=g-import-not-at-top
  scalars = plots.read_scalars(str(tmp_path), ('ldmi',), prefixes=('online/',))
  np.testing.assert_allclose(scalars['online/epoch'][1], [2 / 625, 4 / 625])   # 10,000 / 16
  plots.plot_online([{'label': 'run', 'scalars': scalars}], str(tmp_path / 'online.png'))
  assert (tmp_path / 'online.png').stat().st_size > 10_000


@pytest.mark.slow   # six tiny runs, ~120 s
def test_resume_adds_or_ignores_the_online_classifier(tmp_path, capsys):
  """A checkpoint without the head, or with a head of another kind (plain vs standardised),
  resumes with a fresh one; a run without it ignores a stored head."""
  without, with_head = (tiny_config(**{'total_steps': 2}),
                        tiny_config(**{'online_eval.enabled': True}))
  train.train_and_evaluate(without, str(tmp_path / 'a'))
  state = train.train_and_evaluate(with_head, str(tmp_path / 'a'))
  assert int(state.step) == 4 and state.online['params']
  fresh = "the checkpoint has no online classifier of this config's kind: a fresh one trains"
  assert f'{fresh} from step 2' in capsys.readouterr().out
  train.train_and_evaluate(tiny_config(**{'online_eval.enabled': True, 'total_steps': 2}),
                           str(tmp_path / 'b'))
  state = train.train_and_evaluate(tiny_config(), str(tmp_path / 'b'))
  assert int(state.step) == 4 and not state.online
  train.train_and_evaluate(tiny_config(**{'online_eval.enabled': True, 'total_steps': 2,
                                          'online_eval.standardize': False}), str(tmp_path / 'c'))
  capsys.readouterr()
  state = train.train_and_evaluate(tiny_config(**{'online_eval.enabled': True}),
                                   str(tmp_path / 'c'))
  assert int(state.step) == 4 and 'standardize' in state.online['batch_stats']
  assert f'{fresh} from step 2' in capsys.readouterr().out
