"""Data sources of the pretraining job: the configured train split and this host's batches.

TensorFlow is imported only by the tf.data sources (input_pipeline.py: sample, archive, folder,
tfds). The `synthetic` source is NumPy alone, so the model, the losses and the train step run
where TensorFlow is not installed (GPU images commonly ship without it):

  synthetic  random views drawn from N(0, 1), the scale of normalised images, at
             config.data.image_size, for benchmarks and smoke runs. An epoch is
             `config.data.synthetic_examples` images; `config.data.synthetic_pool` distinct
             batches per host are generated once and cycled, so generation never limits the step.
             Batch i of the pool is a pure function of (seed, process, i).
"""
import dataclasses

import numpy as np

TF_SOURCES = ('sample', 'archive', 'folder', 'tfds')
SOURCES = TF_SOURCES + ('synthetic',)
CACHE_DECODED = ('auto', 'always', 'never')
# How a split is held (input_pipeline.py): decoded in memory when it fits, else streamed. A
# workdir config of an earlier version lacks these and gets them.
STREAMING_DEFAULTS = dict(
    cache_decoded='auto',        # 'auto' (cache when it fits cache_budget_gb), 'always', 'never'
    cache_budget_gb=8.0,         # per host: the decoded split's memory that 'auto' accepts
    check_files=1000,            # files structurally checked at load when streaming (-1: all)
    cache_dir='~/.cache/infomax_jax')   # a compressed archive is decompressed here, once
# Per-channel (mean, std) of each data set, applied to every view (augment.normalize).
NORMALIZATION = {
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
    'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclasses.dataclass
class SyntheticExamples:
  """The synthetic train split: only its size (there are no images, labels or test split)."""
  size: int

  def __len__(self):
    return self.size


def load_train_split(data_config):
  """The train split of the configured source (input_pipeline.Examples or SyntheticExamples)."""
  if data_config.source == 'synthetic':
    return SyntheticExamples(int(data_config.synthetic_examples))
  from infomax_jax import input_pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)
  return input_pipeline.load_split(data_config, data_config.train_split)


def pretrain_batches(examples, config, start_step, process_index, process_count, labels=False):
  """({name: (per-host shape, dtype)}, iterator over this host's batches from `start_step`);
  with `labels`, each batch also carries the images' 'label' (the online classifier's)."""
  if isinstance(examples, SyntheticExamples):
    return _synthetic_batches(config, start_step, process_index, process_count)
  from infomax_jax import input_pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)
  dataset = input_pipeline.pretrain_dataset(examples, config, start_step, process_index,
                                            process_count, labels=labels)
  shapes = {name: (tuple(spec.shape), spec.dtype.as_numpy_dtype)
            for name, spec in dataset.element_spec.items()}
  return shapes, input_pipeline.batches(dataset)


def _synthetic_batches(config, start_step, process_index, process_count):
  per_host = config.batch_size // process_count
  shape = (per_host, config.data.image_size, config.data.image_size, 3)
  pool = []
  for i in range(config.data.synthetic_pool):
    rng = np.random.default_rng([config.seed, process_index, i])
    pool.append({name: rng.standard_normal(shape, dtype=np.float32)
                 for name in ('view1', 'view2')})

  def batches():
    step = start_step
    while True:
      yield pool[step % len(pool)]
      step += 1

  return {name: (shape, np.float32) for name in ('view1', 'view2')}, batches()
