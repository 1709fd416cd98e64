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
  for field in ('params', 'batch_stats', 'loss_state'):
    for a, b in zip(jax.tree.leaves(getattr(states[0], field)),
                    jax.tree.leaves(getattr(states[10], field))):
      np.testing.assert_array_equal(a, b)


def test_online_head_learns_a_linearly_separable_set():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(5, 32)) * 3

  def draw(n):
    labels = rng.integers(0, 5, n)
    return (centres[labels] + rng.normal(size=(n, 32))).astype(np.float32), labels.astype(np.int32)

  config = tiny_config().online_eval
  online = online_eval.init(config, 5, 32, jax.random.key(0))
  step = jax.jit(functools.partial(online_eval.train_head, online_config=config))
  for _ in range(200):
    online, metrics = step(online, *draw(64))
  x, y = draw(2000)
  logits = x @ np.asarray(online['params']['kernel']) + np.asarray(online['params']['bias'])
  assert np.mean(np.argmax(logits, 1) == y) >= 0.995 and float(metrics['online/train_top1']) > 98


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


@pytest.mark.slow   # four tiny runs, ~80 s
def test_resume_adds_or_ignores_the_online_classifier(tmp_path, capsys):
  """A checkpoint without the head resumes with a fresh one; a run without it ignores a stored
  head."""
  without, with_head = (tiny_config(**{'total_steps': 2}),
                        tiny_config(**{'online_eval.enabled': True}))
  train.train_and_evaluate(without, str(tmp_path / 'a'))
  state = train.train_and_evaluate(with_head, str(tmp_path / 'a'))
  assert int(state.step) == 4 and state.online['params']
  assert 'the checkpoint has no online classifier: a fresh one trains from step 2' in (
      capsys.readouterr().out)
  train.train_and_evaluate(tiny_config(**{'online_eval.enabled': True, 'total_steps': 2}),
                           str(tmp_path / 'b'))
  state = train.train_and_evaluate(tiny_config(), str(tmp_path / 'b'))
  assert int(state.step) == 4 and not state.online
