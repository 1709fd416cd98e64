"""Semi-supervised fine-tuning (thesis App. B.2.5): encoder + linear head on a labelled fraction.

A class-balanced subset of the training split (`fraction` of every class, drawn with a fixed seed)
is re-augmented every epoch with the probe train transform (random resized crop + flip); encoder
and head are trained together, BatchNorm in train mode (statistics over the global batch), with
SGD momentum 0.9 and separate step schedules: every `step_epochs` epochs the head learning rate is
multiplied by `head_factor` (÷10) and the encoder one by `encoder_factor` (÷5).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from infomax_jax import evaluation
from infomax_jax import input_pipeline
from infomax_jax import models
from infomax_jax import train


class Classifier(nn.Module):
  """Encoder features → linear head."""
  encoder: nn.Module
  num_classes: int

  def setup(self):
    self.head = nn.Dense(self.num_classes, kernel_init=models.pytorch_default_init)

  def __call__(self, x, train: bool):
    return self.head(self.encoder(x, train))


def _step(carry, images, labels, *, model, tx):
  params, batch_stats, opt_state = carry

  def loss_fn(p):
    logits, updates = model.apply({'params': p, 'batch_stats': batch_stats}, images, train=True,
                                  mutable=['batch_stats'])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.mean(ce), updates['batch_stats']

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return (optax.apply_updates(params, updates), batch_stats, opt_state), loss


def fine_tune(config, encoder_variables, train_examples, test_examples, fraction, head_lr, mesh,
              subset_file=''):
  """Fine-tunes on `fraction` of the labels (a class-balanced random subset, or the images that
  `subset_file` lists); returns test top-1/top-5 in % of the last epoch (`semi.select='last'`)
  or of the epoch with the best test top-1 (`'best'`, with that epoch), subset size, batch."""
  semi = config.probe.semi
  if subset_file:
    indices = evaluation.listed_subset(train_examples, subset_file)
  else:
    indices = evaluation.balanced_subset(train_examples.labels, fraction, semi.subset_seed)
  devices = jax.device_count()
  batch = min(semi.batch_size, len(indices) // devices * devices)
  if batch == 0:
    raise ValueError(f'{fraction:g} of the labels is {len(indices)} images, fewer than the '
                     f'{devices} devices')
  # Whole batches only, so BatchNorm never sees padding: top up with repeats of random members.
  pad = -len(indices) % batch
  rng = np.random.default_rng(semi.subset_seed)
  labelled = train_examples.subset(
      np.concatenate([indices, rng.choice(indices, pad, replace=False)]))
  steps_per_epoch = len(labelled) // batch

  num_classes = len(train_examples.class_names)
  model = Classifier(models.build_encoder(config.model), num_classes)
  size = config.data.image_size
  features = jax.eval_shape(lambda v: model.encoder.apply(v, jnp.zeros((1, size, size, 3)),
                                                          train=False), encoder_variables)
  head = nn.Dense(num_classes, kernel_init=models.pytorch_default_init).init(
      jax.random.key(config.seed), jnp.zeros(features.shape))
  schedule = lambda lr, factor: optax.exponential_decay(
      lr, semi.step_epochs * steps_per_epoch, factor, staircase=True)
  tx = optax.multi_transform(
      {'encoder': optax.sgd(schedule(semi.encoder_lr, semi.encoder_factor), semi.momentum),
       'head': optax.sgd(schedule(head_lr, semi.head_factor), semi.momentum)},
      {'encoder': 'encoder', 'head': 'head'})
  params = {'encoder': encoder_variables['params'], 'head': head['params']}
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(train.DATA_AXIS))
  carry = jax.device_put(
      (params, {'encoder': encoder_variables['batch_stats']}, tx.init(params)), replicated)
  step = jax.jit(functools.partial(_step, model=model, tx=tx),
                 in_shardings=(replicated, sharded, sharded),
                 out_shardings=(replicated, replicated))
  predict = evaluation.batched_apply(lambda v, x: model.apply(v, x, train=False), mesh)
  test = input_pipeline.probe_dataset(test_examples, config.data,
                                      evaluation.batch_size_for(config.probe.feature_batch_size),
                                      train=False)

  def test_accuracy():
    return evaluation.topk_accuracy(*predict({'params': carry[0], 'batch_stats': carry[1]}, test))

  best = None
  for epoch in range(semi.epochs):
    for local in input_pipeline.batches(input_pipeline.probe_dataset(
        labelled, config.data, batch, train=True, seed=config.seed, epoch=epoch)):
      carry, loss = step(carry, *train.global_batch((local['image'], local['label']), sharded))
    if not np.isfinite(float(loss)):
      raise FloatingPointError(f'fine-tuning on {fraction:g} of the labels diverged in epoch '
                               f'{epoch + 1} (loss {float(loss)}); lower probe.semi.head_lrs')
    if semi.select == 'best':
      result = dict(test_accuracy(), epoch=epoch + 1)
      best = result if best is None or result['top1'] > best['top1'] else best
  result = best if semi.select == 'best' else test_accuracy()
  result.update(examples=len(indices), batch_size=batch)
  return result
