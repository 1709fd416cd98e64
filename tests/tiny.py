"""A CPU-sized configuration of the demo for tests: narrow encoder, tiny batch, 16-px crops."""
import jax
import numpy as np

from configs import demo


def tiny_config(loss='corinfomax', **overrides):
  config = demo.get_config(loss)
  config.model.width = 0.125
  config.projector.dims = (32, 16)
  config.data.image_size = 16
  config.batch_size = 16
  config.total_steps = 4
  config.optimizer.warmup_steps = 1
  config.log_every_steps = 2
  config.checkpoint_every_steps = 2
  config.probe.epochs = 2
  config.probe.feature_batch_size = 400
  config.online_eval.enabled = False   # on where a test exercises it (tests/test_online_eval.py)
  config.online_eval.bank_size = 256
  if loss == 'mocov2':
    config.loss.queue_size = 64
  if loss == 'wmse':   # whitening needs sub-batches larger than the embedding
    config.projector.dims = (32, 8)
    config.loss.w_size = 16
  for key, value in overrides.items():
    node = config
    *path, last = key.split('.')
    for part in path:
      node = node[part]
    node[last] = value
  return config


def restore_numpy(workdir, step=None):
  """A checkpoint (default: the latest) of `workdir` as {path: numpy array}, whatever mesh
  saved it."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from infomax_jax import train  # pylint: disable=g-import-not-at-top
  manager = train.checkpoint_manager(str(workdir), read_only=True)
  step = manager.latest_step() if step is None else step
  metadata = manager.item_metadata(step).state
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  state = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(restore_args=restore_args))).state
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}


def tree_relative_errors(a, b):
  """(‖a − b‖ / ‖b‖ over the whole tree, {leaf path: its own relative error})."""
  flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
  flat_b = jax.tree_util.tree_flatten_with_path(b)[0]
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
  leaves, squared_error, squared_norm = {}, 0.0, 0.0
  for (path, x), (_, y) in zip(flat_a, flat_b):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    leaves[jax.tree_util.keystr(path)] = np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-12)
    squared_error += np.sum((x - y)**2)
    squared_norm += np.sum(y**2)
  return float(np.sqrt(squared_error / max(squared_norm, 1e-300))), leaves


def assert_trees_close(a, b, rtol, leaf_rtol=None):
  """‖a − b‖ ≤ rtol·‖b‖ over the whole tree, and ≤ leaf_rtol (default 10·rtol) per leaf: float32
  reductions run in another order on another mesh, which moves small leaves most."""
  leaf_rtol = 10 * rtol if leaf_rtol is None else leaf_rtol
  whole, leaves = tree_relative_errors(a, b)
  for path, error in leaves.items():
    assert error <= leaf_rtol, f'{path}: relative error {error:.2e}'
  assert whole <= rtol, f'whole tree: relative error {whole:.2e}'
