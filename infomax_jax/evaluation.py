"""Shared by the evaluation jobs (probe.py, plots.py): pretraining workdirs, checkpoint steps,
restoring the model, labelled splits, batched inference and accuracies.

Everything here that can fail does so before the jobs write anything, with one line naming the
problem: no config.json, no checkpoint, a checkpoint that does not match the config, a split
without labels.
"""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from infomax_jax import input_pipeline
from infomax_jax import models
from infomax_jax import train
from infomax_jax import validation

REPORT = 'probe.json'   # evaluation → encoder → step → result, written by the probe job


def load_config(workdir):
  """The config.json a pretraining job wrote into `workdir`."""
  path = train.workdir_path(workdir) / 'config.json'
  if not path.exists():
    raise FileNotFoundError(f'no config.json in {workdir}: not a pretraining workdir')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def load_report(workdir):
  """The probe job's results in `workdir` ({} if there are none yet)."""
  path = train.workdir_path(workdir) / REPORT
  return json.loads(path.read_text()) if path.exists() else {}


def save_report(workdir, report):
  (train.workdir_path(workdir) / REPORT).write_text(json.dumps(report, indent=2))


def checkpoint_steps(workdir, which='latest'):
  """(read-only checkpoint manager, steps): `which` is 'latest', 'all' or a step number."""
  manager = train.checkpoint_manager(workdir, read_only=True)
  steps = list(manager.all_steps())
  if not steps:
    raise FileNotFoundError(f'no checkpoint in {train.workdir_path(workdir) / "checkpoints"}')
  which = str(which)
  if which == 'latest':
    return manager, [max(steps)]
  if which == 'all':
    return manager, sorted(steps)
  if not which.isdigit():
    raise ValueError(f"step={which!r}: expected 'latest', 'all' or a step number")
  if int(which) not in steps:
    raise ValueError(f'no checkpoint of step {which} in {workdir}; saved steps: '
                     f'{", ".join(map(str, sorted(steps)))}')
  return manager, [int(which)]


def abstract_variables(config):
  """Shapes of {'params', 'batch_stats'} of the pretraining model (encoder and projector)."""
  model = models.build_model(config, jnp.float32)
  size = config.data.image_size
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                           train=False))


def _parts(variables, parts):
  return {c: {p: variables[c][p] for p in parts if p in variables[c]}
          for c in ('params', 'batch_stats')}


def validate_checkpoint(config, manager):
  """The checkpoint must hold the model this config builds (train-side check, before restoring).

  Checks the latest step: the training job refuses to resume a workdir with another architecture,
  so every step of a workdir shares it.
  """
  validation.validate_checkpoint(_parts(abstract_variables(config), ('encoder', 'projector')),
                                 manager)


def restore_variables(config, manager, step, parts=('encoder', 'projector')):
  """{'params', 'batch_stats'} of the model's `parts` at checkpoint `step`, replicated."""
  replicated = jax.sharding.NamedSharding(train.make_mesh(), jax.sharding.PartitionSpec())
  item = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                      _parts(abstract_variables(config), parts))
  return manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
      partial_restore=True))).state


def initial_variables(config, parts=('encoder', 'projector')):
  """The model as the pretraining run initialised it (same seed): the untrained baseline."""
  model = models.build_model(config, jnp.float32)
  size = config.data.image_size
  variables = model.init(jax.random.key(config.seed), jnp.zeros((2, size, size, 3)), train=False)
  return _parts(variables, parts)


def submodule(variables, name):
  """{'params', 'batch_stats'} of one submodule ('encoder' or 'projector')."""
  return {c: variables[c][name] for c in ('params', 'batch_stats') if name in variables[c]}


def labelled_split(data_config, split):
  """Examples of one split of the configured source; a split without labels is an error."""
  if data_config.source == 'synthetic':
    raise ValueError("data source 'synthetic' has no labels and no test split: evaluate with a "
                     'labelled source (--config=<file> or --config.data.source=...)')
  examples = input_pipeline.load_split(data_config, split)
  require_labels(examples, f'split {split!r} of data source {data_config.source!r}')
  return examples


def require_labels(examples, where):
  """A one-line error unless `examples` has at least two classes and labels in range."""
  if len(examples.class_names) < 2:
    raise ValueError(f'{where} has no labels: all {len(examples)} images are in one class '
                     f'{examples.class_names[0]!r}; evaluation needs a labelled data set')
  labels = examples.reader.some_labels()
  if labels.min() < 0 or labels.max() >= len(examples.class_names):
    raise ValueError(f'{where} has no labels (label {labels.min()} outside 0..'
                     f'{len(examples.class_names) - 1}); evaluation needs a labelled data set')


def labelled_splits(data_config):
  """(train, test) Examples; both splits must have the same classes."""
  train_examples = labelled_split(data_config, data_config.train_split)
  test_examples = labelled_split(data_config, data_config.test_split)
  require_same_classes(train_examples, test_examples, data_config)
  return train_examples, test_examples


def require_same_classes(train_examples, test_examples, data_config):
  """A one-line error unless the train and test splits have the same classes."""
  if list(train_examples.class_names) != list(test_examples.class_names):
    raise ValueError(f'splits {data_config.train_split!r} and {data_config.test_split!r} have '
                     f'different classes ({len(train_examples.class_names)} vs '
                     f'{len(test_examples.class_names)})')


def balanced_subset(labels, fraction, seed):
  """Sorted indices of round(fraction·n_c) (at least one) examples of every class c."""
  rng = np.random.default_rng(seed)
  picks = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    picks.append(rng.choice(members, max(1, int(round(fraction * len(members)))), replace=False))
  return np.sort(np.concatenate(picks))


def listed_subset(examples, path):
  """Sorted indices of the examples listed in the text file `path`, one per line (e.g. SimCLR's
  1percent.txt of ImageNet file names): an entry names an example by the end of its path (its
  file name, or `class/file` where file names repeat). One-line error for an entry that matches
  no example or several."""
  wanted = {line.strip() for line in train.workdir_path(path).read_text().splitlines()
            if line.strip()}
  hits = {}
  for i, name in enumerate(examples.names):
    parts = name.replace(':', '/').split('/')
    for k in range(1, len(parts) + 1):
      suffix = '/'.join(parts[-k:])
      if suffix in wanted:
        hits.setdefault(suffix, []).append(i)
  if missing := sorted(wanted - set(hits)):
    raise ValueError(f'{path}: {len(missing)} of its {len(wanted)} entries are not in the train '
                     f'split (e.g. {missing[0]})')
  if ambiguous := sorted(w for w, found in hits.items() if len(found) > 1):
    raise ValueError(f'{path}: {len(ambiguous)} entries match several images (e.g. '
                     f'{ambiguous[0]}); give class/file')
  return np.array(sorted(found[0] for found in hits.values()))


def batch_size_for(size):
  """`size` rounded up to a multiple of the device count (batches are sharded over devices)."""
  return -(-size // jax.device_count()) * jax.device_count()


def batched_apply(fn, mesh):
  """run(variables, dataset) → (outputs of fn(variables, images), labels) over the real examples
  of a probe dataset; fn is jitted once, with the batch sharded over `mesh`."""
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(train.DATA_AXIS))
  apply = jax.jit(fn, out_shardings=sharded)

  def run(variables, dataset):
    outputs, labels = [], []
    for batch in input_pipeline.batches(dataset):
      out = apply(variables, train.global_batch(batch['image'], sharded))
      outputs.append(jax.tree.map(lambda x: np.asarray(x)[batch['mask']], out))
      labels.append(batch['label'][batch['mask']])
    return jax.tree.map(lambda *xs: np.concatenate(xs), *outputs), np.concatenate(labels)

  return run


def topk_accuracy(scores, labels, ks=(1, 5)):
  """{'top1', 'top5'} in % of class scores [n, classes] against integer labels.

  Ties are shared, not broken by class order: with g classes scoring above the true class and e
  others equal to it, an example counts min(1, (k − g) / (e + 1)) towards top-k when g < k (the
  expected hit under a uniformly random tie-break). This matters for kNN, where every class
  without a vote scores 0.
  """
  scores = np.asarray(scores)
  true = np.take_along_axis(scores, labels[:, None], axis=1)
  greater = np.sum(scores > true, axis=1)
  equal = np.sum(scores == true, axis=1) - 1
  return {f'top{k}': float(np.mean(np.clip((k - greater) / (equal + 1), 0.0, 1.0)) * 100)
          for k in ks}
