"""Pretraining: TrainState, the sharded train step and the training loop.

One jitted step runs over a mesh of every device of every host with the batch sharded along
'data'; jit sees the global batch, so BatchNorm statistics and every loss statistic (means,
covariances, negatives) are over the global batch.
"""
import datetime
import functools
import json
import os
import platform
import re
import signal
import threading
import time
from typing import Any

from absl import logging
import flax
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
from etils import epath
import optax
import orbax.checkpoint as ocp

from infomax_jax import losses
from infomax_jax import models
from infomax_jax import online_eval
from infomax_jax import sources
from infomax_jax import validation

DATA_AXIS = 'data'


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  loss_state: Any
  target: Any  # {'params', 'batch_stats'} of the momentum encoder, or {} if the loss has none
  online: Any = flax.struct.field(default_factory=dict)  # online classifier (online_eval.py) or {}


def make_mesh(devices=None):
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.array(devices), (DATA_AXIS,),
                           axis_types=(jax.sharding.AxisType.Auto,))


def steps_per_epoch(config, num_train):
  return max(1, num_train // config.batch_size)


def total_steps(config, num_train):
  if config.total_steps > 0:
    return config.total_steps
  return config.num_epochs * steps_per_epoch(config, num_train)


def peak_learning_rate(config):
  opt = config.optimizer
  return opt.peak_lr * (config.batch_size / opt.base_batch_size if opt.base_batch_size else 1.0)


def learning_rate_schedule(config, num_train):
  """Linear warm-up from warmup_init_lr to the peak, then cosine decay to min_lr (§5.2.5).

  The peak is `peak_lr`, times batch_size / base_batch_size when base_batch_size > 0 (the linear
  scaling rule of the VICReg, Barlow Twins and solo-learn recipes). `lr_schedule_per='step'`
  moves the rate every step (solo-learn); `'epoch'` holds it for an epoch, as the official
  CorInfoMax code's LinearWarmupCosineAnnealingLR stepped once per epoch: epoch e < W gets
  init + e·(peak − init)/(W − 1) (the peak in epoch W − 1 and again in W), then
  min + (peak − min)·(1 + cos(π(e − W)/(E − W)))/2.
  """
  opt = config.optimizer
  steps = total_steps(config, num_train)
  peak = peak_learning_rate(config)
  if opt.get('lr_schedule_per', 'step') == 'epoch':
    per_epoch = steps_per_epoch(config, num_train)
    epochs, warmup = -(-steps // per_epoch), opt.warmup_epochs
    by_epoch = optax.join_schedules(
        [optax.linear_schedule(opt.warmup_init_lr, peak, max(warmup - 1, 1)),
         optax.cosine_decay_schedule(peak, max(epochs - warmup, 1), opt.min_lr / peak)],
        boundaries=[warmup])
    return lambda step: by_epoch(step // per_epoch)
  warmup = opt.warmup_steps or opt.warmup_epochs * steps_per_epoch(config, num_train)
  warmup = min(warmup, steps - 1)
  return optax.warmup_cosine_decay_schedule(opt.warmup_init_lr, peak, warmup, steps, opt.min_lr)


def scale_by_lars(learning_rate, weight_decay, eta, clip_lr, eps=1e-8):
  """solo-learn's LARS scaling (solo/utils/lars.py, `exclude_bias_n_norm_lars=True`; You et al.
  2017, eq. 6): a weight W with gradient g becomes q·(g + wd·W) with the local rate
  q = eta·‖W‖ / (‖g‖ + wd·‖W‖ + eps), with `clip_lr` min(q / lr, 1) (a step never above lr);
  biases and BatchNorm parameters, and zero norms, keep g, without
  decay. Momentum and the learning rate follow (`make_optimizer`)."""
  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params):
    lr = learning_rate(state.count)

    def scale(g, w):
      if w.ndim <= 1:
        return g
      w_norm, g_norm = jnp.linalg.norm(w), jnp.linalg.norm(g)
      q = eta * w_norm / (g_norm + weight_decay * w_norm + eps)
      if clip_lr:
        q = jnp.minimum(q / lr, 1.0)
      return jnp.where((w_norm > 0) & (g_norm > 0), q * (g + weight_decay * w), g)

    return (jax.tree.map(scale, updates, params),
            optax.ScaleByScheduleState(count=optax.safe_increment(state.count)))

  return optax.GradientTransformation(init, update)


def make_optimizer(config, num_train):
  """`sgd`: PyTorch-style SGD, weight decay added to the gradient, then heavy-ball momentum (the
  thesis optimizer). `adam`: Adam with weight decay added to the gradient (torch.optim.Adam; W-MSE).
  `lars`: solo-learn's LARS (`scale_by_lars`, trust coefficient `lars_eta`, `lars_clip_lr`),
  then PyTorch-style momentum on the scaled gradient and the learning rate.
  `predictor_fixed_lr`: the predictor trains at the constant peak rate (SimSiam §4.2: "the
  predictor's lr is not decayed"; solo-learn's `static_lr`), everything else on the schedule."""
  opt = config.optimizer
  scheduled = _optimizer(opt, learning_rate_schedule(config, num_train))
  if not opt.get('predictor_fixed_lr', False):
    return scheduled
  fixed = _optimizer(opt, peak_learning_rate(config))
  return optax.multi_transform(
      {'schedule': scheduled, 'fixed': fixed},
      lambda params: {name: jax.tree.map(lambda _: 'fixed' if name == 'predictor' else 'schedule',
                                         subtree) for name, subtree in params.items()})


def _optimizer(opt, learning_rate):
  if opt.name == 'lars':
    return optax.chain(
        scale_by_lars(learning_rate if callable(learning_rate) else lambda _: learning_rate,
                      opt.weight_decay, opt.lars_eta, opt.get('lars_clip_lr', False)),
        optax.trace(decay=opt.momentum), optax.scale_by_learning_rate(learning_rate))
  if opt.name == 'adam':   # torch.optim.Adam: weight decay as L2 added to the gradient
    return optax.chain(optax.add_decayed_weights(opt.weight_decay), optax.adam(learning_rate))
  return optax.chain(optax.add_decayed_weights(opt.weight_decay),
                     optax.sgd(learning_rate, momentum=opt.momentum))


def momentum_schedule(config, step, num_steps):
  """Cosine EMA momentum of the target network, m0 → m1 over training (BYOL §3.2; m1 = 1 unless
  the loss sets `target_momentum_final`, e.g. solo-learn's MoCo v2+ 0.999)."""
  m0, m1 = config.loss.target_momentum, config.loss.get('target_momentum_final', 1.0)
  return m1 - (m1 - m0) * (jnp.cos(jnp.pi * step / num_steps) + 1.0) / 2.0


def target_variables(params, batch_stats):
  """The variables the momentum target tracks: the online network's without the predictor,
  which only the online branch applies (BYOL's target gives projections)."""
  without_predictor = lambda tree: {k: v for k, v in tree.items() if k != 'predictor'}
  return {'params': without_predictor(params), 'batch_stats': without_predictor(batch_stats)}


def create_train_state(config, model, tx, rng, num_classes=0):
  """The state at step 0; with `num_classes`, an online classifier over that many classes."""
  image = jnp.zeros((2, config.data.image_size, config.data.image_size, 3), jnp.float32)
  variables = model.init(rng, image, train=False)   # the same network with or without the head
  params, batch_stats = variables['params'], variables.get('batch_stats', {})
  # flax creates BatchNorm running statistics in float32 whatever the parameter dtype; in float64
  # they would turn float64 after the first update and change the step's argument types.
  dtype = jax.tree.leaves(params)[0].dtype
  batch_stats = jax.tree.map(lambda x: x.astype(dtype), batch_stats)
  loss_module = losses.get(config.loss.name)
  target = (target_variables(params, batch_stats)
            if losses.uses_target_network(config.loss) else {})
  online = {}
  if num_classes:
    features = jax.eval_shape(lambda: model.apply(variables, image, train=False))[0]
    online = online_eval.init(config.online_eval, num_classes, features.shape[-1],
                              jax.random.fold_in(rng, 1))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params),
                    loss_state=loss_module.init_state(config.projector.dims[-1], config.loss),
                    target=target, online=online)


def train_step(state, batch, *, model, tx, config, num_steps):
  """One optimisation step on the global batch {'view1', 'view2'[, 'label']}; returns (state,
  metrics). With an online classifier (state.online), it trains on the batch's labels."""
  loss_module = losses.get(config.loss.name)

  def forward(variables, images, with_features=False):
    (features, z), updates = model.apply(variables, images, train=True, mutable=['batch_stats'])
    return ((features, z) if with_features else z), updates['batch_stats']

  def predict(variables, z):
    p, updates = model.apply(variables, z, train=True, method=model.predict,
                             mutable=['batch_stats'])
    return p, updates['batch_stats']

  def objective(params):
    views, features, batch_stats = {}, [], state.batch_stats
    for i in ('1', '2'):   # each view through encoder, projector [and predictor], as solo-learn
      (h, views['z' + i]), batch_stats = forward({'params': params, 'batch_stats': batch_stats},
                                                 batch['view' + i], with_features=True)
      features.append(h)
      if model.predictor is not None:
        views['p' + i], batch_stats = predict({'params': params, 'batch_stats': batch_stats},
                                              views['z' + i])
    z1, z2 = views['z1'], views['z2']
    if state.target:
      views['t1'], _ = forward(state.target, batch['view1'])
      views['t2'], _ = forward(state.target, batch['view2'])
      views['t1'], views['t2'] = jax.lax.stop_gradient((views['t1'], views['t2']))
    loss, loss_state, metrics = loss_module.loss_fn(views, state.loss_state, config.loss)
    return loss, (batch_stats, loss_state, metrics, z1, z2, jnp.concatenate(features))

  (loss, (batch_stats, loss_state, metrics, z1, z2, features)), grads = jax.value_and_grad(
      objective, has_aux=True)(state.params)
  online = state.online
  if online:
    online, online_metrics = online_eval.train_head(
        online, features, jnp.concatenate([batch['label'], batch['label']]), config.online_eval,
        step=state.step, num_steps=num_steps)
    metrics.update(online_metrics)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)

  target = state.target
  if target:
    m = momentum_schedule(config, state.step, num_steps)
    target = jax.tree.map(lambda t, o: m * t + (1.0 - m) * o, target,
                          target_variables(params, batch_stats))
    metrics['target_momentum'] = m

  every = config.diagnostics_every_steps or config.log_every_steps
  diagnostics = functools.partial(losses.collapse_diagnostics, config.loss.name, loss_state,
                                  eps=config.loss.get('eps', 1e-8))
  blank = jax.tree.map(jnp.zeros_like, jax.eval_shape(diagnostics, z1, z2))
  metrics.update(jax.lax.cond((state.step + 1) % every == 0,
                              diagnostics, lambda *_: blank, z1, z2))
  metrics['loss'] = loss
  metrics['grad_norm'] = optax.tree.norm(grads)
  # Divergence guard: a non-finite loss or gradient leaves the state as it was (the batch is
  # consumed, the step counter advances) and is reported through metrics['finite'].
  finite = jnp.isfinite(loss) & jnp.isfinite(metrics['grad_norm'])
  updated = state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state,
                          loss_state=loss_state, target=target, online=online)
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
  metrics['finite'] = finite
  return new_state.replace(step=state.step + 1), metrics


def compile_train_step(config, model, tx, mesh, num_steps):
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS))
  step = functools.partial(train_step, model=model, tx=tx, config=config, num_steps=num_steps)
  return jax.jit(step, in_shardings=(replicated, sharded), out_shardings=(replicated, replicated),
                 donate_argnums=0)


def workdir_path(workdir):
  """The workdir as an etils path: a local directory (made absolute) or a bucket URI (gs://...),
  which every read and write of a workdir goes through."""
  workdir = str(workdir)
  if workdir.startswith('gs://'):
    bucket = workdir[len('gs://'):].split('/')[0]
    if not re.fullmatch(r'[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]', bucket):
      raise ValueError(f'workdir {workdir}: {bucket!r} is not a valid GCS bucket name (3-63 '
                       'lowercase letters, digits, dots, dashes or underscores)')
  return epath.Path(workdir if '://' in workdir else os.path.abspath(workdir))


# CPU instruction sets that change XLA's kernels, hence float32 rounding (docs/reliability.md).
ISA_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'avx512_fp16', 'amx_tile', 'sve', 'sve2')
ENVIRONMENT = 'environment.json'   # one entry per start of the training job


def host_environment():
  """What a run's numbers depend on beyond the config: library versions, devices and the host
  CPU with its instruction sets (float32 results repeat on one CPU type, not across types)."""
  model, flags = platform.processor() or platform.machine(), set()
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      info = dict(line.split(':', 1) for line in f.read().split('\n\n')[0].splitlines()
                  if ':' in line)
    info = {key.strip(): value.strip() for key, value in info.items()}
    model = info.get('model name', model)
    flags = set((info.get('flags') or info.get('Features', '')).split())
  device = jax.devices()[0]
  return {'jax': jax.__version__, 'flax': flax.__version__, 'optax': optax.__version__,
          'backend': jax.default_backend(), 'device_kind': device.device_kind,
          'devices': jax.device_count(), 'processes': jax.process_count(), 'cpu': model,
          'cpu_isa': [name for name in ISA_FLAGS if name in flags],
          'xla_flags': os.environ.get('XLA_FLAGS', '')}


def record_environment(workdir, start_step):
  """Appends this start's host_environment() to <workdir>/environment.json."""
  path = workdir_path(workdir) / ENVIRONMENT
  try:
    entries = json.loads(path.read_text()) if path.exists() else []
  except json.JSONDecodeError as error:
    raise ValueError(f'{path} is not JSON ({error}); move it away to start a new one') from None
  if not isinstance(entries, list):
    raise ValueError(f'{path} is not a list of entries; move it away to start a new one')
  entries.append({'start_step': start_step,
                  'time': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                  **host_environment()})
  path.write_text(json.dumps(entries, indent=2))


def checkpoint_manager(workdir, config=None, read_only=False):
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints if config else None, create=not read_only,
      read_only=read_only, enable_async_checkpointing=False)
  return ocp.CheckpointManager(workdir_path(workdir) / 'checkpoints',
                               options=options,
                               item_handlers={'state': ocp.PyTreeCheckpointHandler()})


def restore_state(manager, state, step=None, validate=False):
  """(TrainState of checkpoint `step` (default: latest) placed like `state`, whether the checkpoint
  holds an online classifier of `state`'s kind). The classifier is optional on both sides: `state`
  keeps its fresh head unless the checkpoint has one of the same shapes; a stored head that `state`
  lacks or does not match is read (shapes from the checkpoint) and dropped. `validate`: first
  check every other array's shape against `state`'s, with a one-line error."""
  step = manager.latest_step() if step is None else step
  sharding = jax.tree.leaves(state.params)[0].sharding
  stored = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                        manager.item_metadata(step).state.get('online', {}),
                        is_leaf=lambda x: hasattr(x, 'shape'))
  same_head = bool(state.online) and (validation.leaf_shapes(stored) ==
                                      validation.leaf_shapes(state.online))
  template = state.replace(online=state.online if same_head else stored)
  if validate:
    validation.validate_checkpoint(template, manager)
  args = ocp.args.PyTreeRestore(
      template, restore_args=ocp.checkpoint_utils.construct_restore_args(template),
      partial_restore=True)
  restored = manager.restore(step, args=ocp.args.Composite(state=args)).state
  return restored.replace(online=restored.online if same_head else state.online), same_head


def save_state(manager, state):
  manager.save(int(state.step), args=ocp.args.Composite(state=ocp.args.PyTreeSave(state)))


def global_batch(local_batch, sharding):
  """Per-host numpy batch → global jax arrays sharded along the batch axis."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      local_batch)


class _Preemption:
  """SIGTERM or Ctrl-C (single process) or the jax.distributed preemption notice (multi-host)
  asks the loop to save at the next step boundary and return; a second Ctrl-C aborts at once."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __enter__(self):
    self.requested = False
    self.previous = {}
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self.previous = {s: signal.signal(s, self._request) for s in self.SIGNALS}
    return self

  def _request(self, signum, _):
    if signum == signal.SIGINT:
      if self.requested:
        raise KeyboardInterrupt
      print('interrupted: saving at the next step boundary (Ctrl-C again aborts without saving)',
            flush=True)
    self.requested = True

  def reached(self, step):
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def __exit__(self, *_):
    for s, handler in self.previous.items():
      signal.signal(s, handler)


class _ConsoleWriter:
  """The metric writer where clu's TensorBoard backend (TensorFlow) is missing: scalars go to the
  absl log at INFO level (which the command-line jobs silence), histograms nowhere; the progress
  line is printed either way."""

  def write_scalars(self, step, scalars):
    logging.info('[%d] %s', step, ', '.join(f'{k}={float(v):.6g}' for k, v in scalars.items()))

  def write_histograms(self, step, arrays):
    del step, arrays

  def flush(self):
    pass


def metric_writer(workdir, is_main):
  """clu's TensorBoard event files + log writer; console only (said once) without TensorFlow."""
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    if is_main:
      print(f'TensorBoard event files are off ({e}): the progress line is the only metric '
            'output', flush=True)
    return _ConsoleWriter()
  return metric_writers.create_default_writer(workdir, just_logging=not is_main)


def _nonfinite_error(step, metrics):
  bad = [k for k, v in metrics.items() if k != 'finite' and not np.all(np.isfinite(v))]
  values = ', '.join(f'{k}={float(np.ravel(metrics[k])[0])}' for k in bad)
  return FloatingPointError(f'step {step}: non-finite {values}; the state was not updated and no '
                            f'checkpoint of it was saved, the last good checkpoint is kept')


def online_evaluator(config, model, mesh, examples, say):
  """The in-loop online_eval.Evaluator, or None when config.online_eval is off or the source has
  no labels (said in one line); a split without labels or no test split is a one-line error."""
  online = config.get('online_eval')
  if not online or not online.enabled:
    return None
  if isinstance(examples, sources.SyntheticExamples):
    say("online evaluation off: data source 'synthetic' has no labels")
    return None
  from infomax_jax import evaluation  # pylint: disable=g-import-not-at-top  (TensorFlow)
  evaluation.require_labels(examples, f'split {config.data.train_split!r} of data source '
                                      f'{config.data.source!r}')
  test_examples = evaluation.labelled_split(config.data, config.data.test_split)
  evaluation.require_same_classes(examples, test_examples, config.data)
  return online_eval.Evaluator(config, model, mesh, examples, test_examples)


def train_and_evaluate(config, workdir):
  """Pretrains per `config`, checkpointing into `workdir`; resumes from its latest checkpoint."""
  validation.validate_config(config)
  is_main = jax.process_index() == 0
  say = lambda message: print(message, flush=True) if is_main else None
  say(f'loading the {config.data.train_split!r} split of data source {config.data.source!r}')
  examples = sources.load_train_split(config.data)
  validation.validate_batch(config, len(examples))
  num_steps = total_steps(config, len(examples))
  mesh = make_mesh()
  model = models.build_model(config)
  tx = make_optimizer(config, len(examples))
  evaluator = online_evaluator(config, model, mesh, examples, say)
  num_classes = evaluator.num_classes if evaluator else 0
  state = jax.jit(functools.partial(create_train_state, config, model, tx,
                                    num_classes=num_classes),
                  out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))(
                      jax.random.key(config.seed))
  manager = checkpoint_manager(workdir, config)
  if manager.latest_step() is not None:
    state, same_head = restore_state(manager, state, validate=True)
    if state.online and not same_head:
      say(f'the checkpoint has no online classifier of this config\'s kind: a fresh one trains '
          f'from step {int(state.step)}')
    say(f'resumed from step {int(state.step)} of {workdir}')
  start = int(state.step)

  writer = metric_writer(workdir, is_main)
  if is_main:
    (workdir_path(workdir) / 'config.json').write_text(config.to_json_best_effort(indent=2))
  if start >= num_steps:
    say(f'training already complete: step {start} of {num_steps} is saved in {workdir}')
    return state
  if is_main:
    record_environment(workdir, start)

  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS))
  shapes, batches = sources.pretrain_batches(examples, config, start, jax.process_index(),
                                             jax.process_count(), labels=bool(evaluator))
  global_batch_spec = {
      name: jax.ShapeDtypeStruct((config.batch_size, *shape[1:]), dtype, sharding=batch_sharding)
      for name, (shape, dtype) in shapes.items()}
  devices = jax.device_count()
  say(f'{len(examples)} training images; compiling the step (batch {config.batch_size} on '
      f'{devices} device{"s" if devices > 1 else ""})')
  step_fn = compile_train_step(config, model, tx, mesh, num_steps).lower(
      state, global_batch_spec).compile()
  if jax.process_count() > 1:
    # Every process has compiled before the first collective: no process times out waiting for
    # another's compilation (gloo on CPU waits 30 s).
    multihost_utils.sync_global_devices('train step compiled')
  schedule = learning_rate_schedule(config, len(examples))
  every = config.diagnostics_every_steps or config.log_every_steps
  evaluate_every = evaluator and (config.online_eval.every_steps or max(1, round(
      config.online_eval.every_epochs * steps_per_epoch(config, len(examples)))))
  latest_online = ''
  skipped = 0

  def guard(step, metrics):
    """Stops (or counts a skipped batch) if the step's loss or gradient was not finite."""
    nonlocal skipped
    if not metrics['finite']:
      error = _nonfinite_error(step, jax.device_get(metrics))
      if skipped >= config.max_skipped_batches:
        raise error
      skipped += 1
      logging.error('%s; batch skipped (%d of at most %d)', error, skipped,
                    config.max_skipped_batches)

  unchecked = None
  timer_step, timer = start, time.perf_counter()
  with _Preemption() as preemption:
    for step, local in zip(range(start + 1, num_steps + 1), batches):
      state, metrics = step_fn(state, global_batch(local, batch_sharding))
      # A step's finite flag is read once the next step is dispatched, so the host never waits
      # for the device between steps; a step that logs or saves reads its own first.
      if unchecked is not None:
        guard(*unchecked)
      unchecked = (step, metrics)
      preempted = preemption.reached(step)
      logs = step % config.log_every_steps == 0 or step == num_steps
      saves = step % config.checkpoint_every_steps == 0 or step == num_steps or preempted
      evaluates = evaluator and not preempted and (step % evaluate_every == 0
                                                   or step == num_steps)
      if logs or saves or evaluates:
        guard(*unchecked)
        unchecked = None
      if evaluates:
        started = time.perf_counter()
        online = evaluator(state)
        online['online/eval_seconds'] = time.perf_counter() - started
        online['online/epoch'] = step / steps_per_epoch(config, len(examples))
        writer.write_scalars(step, online)
        latest_online = (f'  online linear {online["online/linear_top1"]:.1f} % kNN '
                         f'{online[f"online/knn_k{min(config.online_eval.knn_k)}_top1"]:.1f} %')
        timer += time.perf_counter() - started   # the img/s of the steps leave the evaluation out
      if logs:
        metrics = jax.device_get(metrics)
        elapsed = time.perf_counter() - timer
        images_per_second = (step - timer_step) * config.batch_size / elapsed
        scalars = {k: v for k, v in metrics.items() if np.ndim(v) == 0 and k != 'finite'}
        if step % every:
          scalars = {k: v for k, v in scalars.items() if k not in ('ldmi', 'effective_rank')}
        scalars.update(learning_rate=schedule(step - 1), images_per_second=images_per_second)
        writer.write_scalars(step, scalars)
        if step % every == 0 and metrics['finite']:   # a skipped step's eigenvalues are NaN
          writer.write_histograms(step, {'eigenvalues_R1': metrics['eigenvalues_R1']})
        eta = (num_steps - step) * elapsed / (step - timer_step)
        if is_main:
          print(f'step {step}/{num_steps}  loss {float(metrics["loss"]):.4f}  '
                f'{images_per_second:.0f} img/s  ETA {eta / 60:.1f} min{latest_online}',
                flush=True)
        timer_step, timer = step, time.perf_counter()
      if saves:
        save_state(manager, state)
      if preempted:
        if is_main:
          print(f'preempted: saved step {step}, exiting', flush=True)
        break
  manager.wait_until_finished()
  writer.flush()
  if int(state.step) >= num_steps:
    say(f'done: step {num_steps} saved in {workdir}')
  return state
