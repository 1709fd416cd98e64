"""Training spine: sharded step equivalence, checkpoint resume, entry-point errors (the probe
job is tested in test_probe.py)."""
import functools
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import cifar10
from infomax_jax import evaluation
from infomax_jax import input_pipeline
from infomax_jax import models
from infomax_jax import sources
from infomax_jax import train
from tests.tiny import tree_relative_errors
from tests.tiny import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def sample_train():
  return input_pipeline.load_split(tiny_config().data, 'train')


def _run_steps(config, examples, devices, num_steps=3):
  mesh = train.make_mesh(devices)
  model = models.build_model(config)
  tx = train.make_optimizer(config, len(examples))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(train.DATA_AXIS))
  state = jax.jit(functools.partial(train.create_train_state, config, model, tx),
                  out_shardings=replicated)(jax.random.key(config.seed))
  step_fn = train.compile_train_step(config, model, tx, mesh, num_steps)
  losses = []
  for batch in input_pipeline.pretrain_dataset(examples, config).take(num_steps).as_numpy_iterator():
    state, metrics = step_fn(state, train.global_batch(batch, sharded))
    losses.append(float(metrics['loss']))
  return np.array(losses), jax.device_get(state)


def device_count_drift(examples, dtype, num_steps=3):
  """Relative differences between 1 and 8 devices after `num_steps` steps of the tiny config in
  `dtype`: (losses, whole parameter tree, largest parameter leaf, loss state)."""
  config = tiny_config(compute_dtype=dtype)
  with jax.enable_x64(dtype == 'float64'):
    loss_1, state_1 = _run_steps(config, examples, jax.devices()[:1], num_steps)
    loss_8, state_8 = _run_steps(config, examples, jax.devices(), num_steps)
  assert np.all(np.isfinite(loss_1)) and loss_1[0] != loss_1[-1]
  assert {leaf.dtype for leaf in jax.tree.leaves(state_1.params)} == {np.dtype(dtype)}
  params, leaves = tree_relative_errors(state_8.params, state_1.params)
  loss_state, _ = tree_relative_errors(state_8.loss_state, state_1.loss_state)
  return (float(np.max(np.abs(loss_8 - loss_1) / np.abs(loss_1))), params, max(leaves.values()),
          loss_state)


# Bounds on the drift measured with tests/measure_drift.py under the XLA CPU code paths default,
# --xla_cpu_max_isa=AVX2 and AVX2 with YNNPACK fusions off (AMD EPYC, AVX-512; docs/reliability.md),
# largest of the three, margin ≥ 10×:
# float64: losses 5.6e-16, parameters 1.5e-14 (largest leaf 3.3e-14), loss state 1.7e-15: at
#   this precision rounding cannot hide a difference in what the two meshes compute (e.g. a
#   statistic over one device's shard instead of the global batch).
# float32: losses 1.4e-7, parameters 8.5e-6 (largest leaf 8.7e-3), loss state 2.3e-7: three steps
#   amplify rounding (~1e-7) through the log-det's inverse covariance. (Another Xeon gave 1.1e-5 on
#   the parameters, where an earlier bound of 1e-5 failed.) The largest leaf is the bias of a
#   block's first BatchNorm: with the zero-initialised last scale of the block (zero_init_residual)
#   it starts at 0 and its gradient is a near-cancelling sum of a BatchNorm-centred signal, so its
#   float32 value after three steps carries ~1 % rounding (float64: 2.5e-14).
# YNNPACK fusions off with AVX-512 (an opt-in, docs/performance.md) is not bounded in float32:
# there XLA's single-device float32 convolution gradients are 1.6e-3 from float64 (8 devices:
# 9e-7), so 1 and 8 devices differ by ~1e-2; in float64 they agree to 2e-14.
DEVICE_DRIFT_TOLERANCES = {
    # (losses, whole parameter tree, largest leaf, loss state)
    'float64': (1e-12, 1e-11, 1e-10, 1e-12),
    'float32': (1e-5, 2e-4, 1e-1, 1e-5),
}


# float64 takes ~3 min on a slow 2-core CPU (XLA's float64 convolutions): in the slow pass.
@pytest.mark.numerics
@pytest.mark.parametrize('dtype', [pytest.param('float64', marks=pytest.mark.slow), 'float32'])
def test_one_and_eight_devices_agree(sample_train, dtype):
  assert jax.device_count() == 8
  drift = device_count_drift(sample_train, dtype)
  names = ('losses', 'whole parameter tree', 'largest parameter leaf', 'loss state')
  for name, value, tolerance in zip(names, drift, DEVICE_DRIFT_TOLERANCES[dtype]):
    assert value <= tolerance, f'{dtype} {name}: relative error {value:.2e} > {tolerance:.0e}'


def _solo_learn_lars(params, grads, lrs, weight_decay, eta, momentum, clip_lr):
  """NumPy float64 steps of solo-learn's LARS (solo/utils/lars.py, exclude_bias_n_norm_lars)."""
  params = {k: np.asarray(v, np.float64) for k, v in params.items()}
  buffers = {}
  for step, (grad, lr) in enumerate(zip(grads, lrs)):
    for k, p in params.items():
      d = np.asarray(grad[k], np.float64)
      p_norm, g_norm = np.linalg.norm(p), np.linalg.norm(d)
      if p.ndim != 1 and p_norm != 0 and g_norm != 0:
        q = eta * p_norm / (g_norm + p_norm * weight_decay + 1e-8)
        if clip_lr:
          q = min(q / lr, 1)
        d = (d + weight_decay * p) * q
      buffers[k] = d if step == 0 else momentum * buffers[k] + d
      params[k] = p - lr * buffers[k]
  return params


@pytest.mark.parametrize('clip_lr', [False, True])
def test_lars_is_solo_learns_and_scales_lr_linearly(clip_lr):
  """Three steps of make_optimizer's LARS equal solo-learn's on the same gradients: kernels by the
  local rate (clipped at the global one with clip_lr), biases and BatchNorm parameters by plain
  momentum SGD. The peak lr scales with batch/base_batch_size."""
  config = tiny_config()
  config.optimizer.update(name='lars', peak_lr=0.3, base_batch_size=256, lars_eta=0.02,
                          weight_decay=1e-4, lars_clip_lr=clip_lr, warmup_steps=2)
  config.batch_size = 512
  schedule = train.learning_rate_schedule(config, num_train=10**6)
  np.testing.assert_allclose(schedule(2), 0.6, rtol=1e-6)
  rng = np.random.default_rng(0)
  params = {'kernel': rng.normal(size=(5, 4)).astype(np.float32),
            'small': 1e-3 * rng.normal(size=(6, 3)).astype(np.float32),
            'bias': rng.normal(size=(4,)).astype(np.float32)}
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
           for _ in range(3)]
  tx = train.make_optimizer(config, num_train=10**6)
  state, updated = tx.init(params), params
  for grad in grads:
    updates, state = tx.update(grad, state, updated)
    updated = jax.tree.map(lambda p, u: p + u, updated, updates)
  expected = _solo_learn_lars(params, grads, [float(schedule(t)) for t in range(3)],
                              weight_decay=1e-4, eta=0.02, momentum=0.9, clip_lr=clip_lr)
  for k in params:   # float32 against float64: measured ≤ 8.4e-7 relative (elementwise)
    np.testing.assert_allclose(updated[k], expected[k], rtol=1e-5, err_msg=k)
  def local_rate(k):   # at step 0, where lr = warmup_init_lr = 0.003: clip_lr takes min(q/lr, 1)
    return 0.02 * np.linalg.norm(params[k]) / np.linalg.norm(grads[0][k])
  assert local_rate('small') < float(schedule(0)) < local_rate('kernel')   # both branches


def test_simsiam_predictor_trains_at_the_fixed_peak_rate():
  config = tiny_config('simsiam')
  assert config.optimizer.predictor_fixed_lr and config.optimizer.name == 'sgd'
  rng = np.random.default_rng(0)
  params = {name: {'kernel': rng.normal(size=(4, 3)).astype(np.float32)}
            for name in ('encoder', 'projector', 'predictor')}
  grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
  tx = train.make_optimizer(config, num_train=10**4)
  updates, _ = tx.update(grads, tx.init(params), params)
  lr = float(train.learning_rate_schedule(config, 10**4)(0))   # the warm-up's first rate
  peak = train.peak_learning_rate(config)
  assert lr < peak / 100
  decay = config.optimizer.weight_decay
  for name, rate in (('encoder', lr), ('projector', lr), ('predictor', peak)):
    np.testing.assert_allclose(updates[name]['kernel'],
                               -rate * (grads[name]['kernel'] + decay * params[name]['kernel']),
                               rtol=1e-6, err_msg=name)


def _official_epoch_lr(epoch, warmup, epochs, init, peak, eta_min):
  """LinearWarmupCosineAnnealingLR._get_closed_form_lr of the official CorInfoMax code
  (cifars-tiny/LRscheduler.py), stepped once per epoch."""
  if epoch < warmup:
    return init + epoch * (peak - init) / (warmup - 1)
  return eta_min + 0.5 * (peak - eta_min) * (
      1 + np.cos(np.pi * (epoch - warmup) / (epochs - warmup)))


def test_per_epoch_schedule_is_the_official_schedulers():
  config = cifar10.get_config('corinfomax')
  assert config.optimizer.lr_schedule_per == 'epoch'
  assert (config.num_epochs, config.optimizer.warmup_epochs) == (1000, 10)
  num_train = 3 * config.batch_size + 100          # 3 steps per epoch
  schedule = train.learning_rate_schedule(config, num_train)
  steps = np.arange(3000)
  expected = [_official_epoch_lr(s // 3, 10, 1000, 0.003, 0.5, 1e-6) for s in steps]
  # float32 against float64 (rates from 1e-6 to 0.5): measured at most 7.5e-8 off, 1/22 of this
  # tolerance; the per-step schedule is up to 5.0e-2 off.
  np.testing.assert_allclose(schedule(steps), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose([schedule(0), schedule(2)], 0.003, rtol=1e-5)   # all of epoch 1
  np.testing.assert_allclose([schedule(27), schedule(30)], [0.5, 0.5])   # epochs 10 and 11
  config.optimizer.lr_schedule_per = 'step'        # moves within the first epoch
  per_step = train.learning_rate_schedule(config, num_train)
  assert float(per_step(1)) > 0.003


def test_resume_equals_uninterrupted_run(tmp_path):
  config = tiny_config(**{'online_eval.enabled': True})   # the online head resumes too
  workdir = str(tmp_path)
  final = jax.device_get(train.train_and_evaluate(config, workdir))
  manager = train.checkpoint_manager(workdir, config)
  assert manager.all_steps() == [2, 4]
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '4'))   # as if killed after step 2
  resumed = jax.device_get(train.train_and_evaluate(config, workdir))
  assert int(resumed.step) == 4 and resumed.online['params']   # the online head included
  for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  starts = json.loads((tmp_path / train.ENVIRONMENT).read_text())   # one entry per start
  assert [entry['start_step'] for entry in starts] == [0, 2]
  assert starts[0]['jax'] == jax.__version__ and starts[0]['devices'] == jax.device_count()
  assert starts[0]['cpu'] and set(starts[0]['cpu_isa']) <= set(train.ISA_FLAGS)


def test_unreadable_environment_record_is_one_line_error(tmp_path):
  (tmp_path / train.ENVIRONMENT).write_text('{"start_step": 0')
  with pytest.raises(ValueError, match='is not JSON .*move it away'):
    train.record_environment(str(tmp_path), 0)
  assert (tmp_path / train.ENVIRONMENT).read_text() == '{"start_step": 0'   # kept as it was


def _main(*args, cwd=ROOT):
  return subprocess.run([sys.executable, '-m', 'infomax_jax.main', *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})


def test_unknown_data_source_is_one_line_error(tmp_path):
  workdir = tmp_path / 'run'
  result = _main('--config=configs/demo.py', f'--workdir={workdir}', '--config.data.source=nope')
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last == ("error: unknown data source 'nope'; known sources: "
                  "sample, archive, folder, tfds, synthetic")
  assert 'Traceback' not in result.stderr
  assert not workdir.exists()


def test_synthetic_source_is_a_function_of_seed_and_step():
  config = tiny_config(**{'data.source': 'synthetic', 'data.synthetic_examples': 100,
                          'data.synthetic_pool': 3})
  examples = sources.load_train_split(config.data)
  assert len(examples) == 100
  shapes, batches = sources.pretrain_batches(examples, config, 0, 0, 1)
  assert shapes == {'view1': ((16, 16, 16, 3), np.float32), 'view2': ((16, 16, 16, 3), np.float32)}
  first = [next(batches) for _ in range(4)]
  _, resumed = sources.pretrain_batches(examples, config, 2, 0, 1)
  np.testing.assert_array_equal(next(resumed)['view1'], first[2]['view1'])
  np.testing.assert_array_equal(first[3]['view2'], first[0]['view2'])      # the pool cycles
  assert not np.array_equal(first[0]['view1'], first[1]['view1'])
  _, other_host = sources.pretrain_batches(examples, config, 0, 1, 2)
  assert next(other_host)['view1'].shape == (8, 16, 16, 3)
  with pytest.raises(ValueError, match="data source 'synthetic' has no labels"):
    evaluation.labelled_splits(config.data)



def test_predictor_is_online_only():
  """BYOL: the predictor is in the online parameters and BatchNorm statistics, not in the momentum
  target, which holds every other variable (abstract state: no compilation)."""
  config = tiny_config('byol')
  model = models.build_model(config)
  tx = train.make_optimizer(config, 64)
  state = jax.eval_shape(functools.partial(train.create_train_state, config, model, tx),
                         jax.random.key(0))
  assert 'predictor' in state.params and 'predictor' in state.batch_stats
  assert 'predictor' not in state.target['params'] and 'predictor' not in state.target['batch_stats']
  online = train.target_variables(state.params, state.batch_stats)
  assert jax.tree.structure(online) == jax.tree.structure(state.target)
