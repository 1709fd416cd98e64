"""Defaults of the evaluation protocols (TRAINING.md, docs/evaluation.md): `config.probe`.

Kept apart from the evaluation jobs, which need TensorFlow for their data, so that configs import
without it; override with --probe.<field>=<value> (probe job) or --config.probe.<field>=<value>.
"""
import ml_collections


def knn_config():
  """k = 20 and 200, T = 0.07 (Wu et al. 2018; solo-learn)."""
  return ml_collections.ConfigDict(dict(k=(20, 200), temperature=0.07, chunk_size=1000))


def semi_config():
  """Thesis ImageNet-1K values (App. B.2.5): 1 % and 10 % of the labels, head lr 30 / 20, 20
  epochs, batch 256, the last epoch's accuracy, class-balanced random subsets (`subset_seed`).

  The official script's choices, as options: head lr 10 for 1 % (`head_lrs=(10, 20)`); the best
  epoch's test accuracy (`select='best'`: model selection on the test split, reported as such);
  SimCLR's fixed subsets (`subset_files`: one text file per fraction listing train image file
  names, e.g. 1percent.txt and 10percent.txt, matched by file name)."""
  return ml_collections.ConfigDict(dict(
      fractions=(0.01, 0.1), head_lrs=(30.0, 20.0), encoder_lr=0.005, epochs=20, batch_size=256,
      momentum=0.9, step_epochs=5, head_factor=0.1, encoder_factor=0.2, subset_seed=0,
      select='last', subset_files=()))


def tsne_config():
  """Thesis Fig. 5.4 settings (perplexity 50, early exaggeration 12, 1000 iterations), on at most
  `points` test images drawn class-balanced."""
  return ml_collections.ConfigDict(dict(points=2000, perplexity=50.0, exaggeration=12.0,
                                        iterations=1000, seed=0))


def probe_config():
  """The thesis protocols. `augment`: the linear probe trains on a fresh random-resized-crop +
  flip view of every train image in every epoch (thesis §5.2, App. B.1.2, the official code;
  reported as `linear`); False trains on features of the test-transformed train split computed
  once (the fast option, reported as `linear_cached`). `standardize`: features are standardised
  with the train split's statistics (a fixed affine map, so the same classifier family;
  probe.standardizer)."""
  return ml_collections.ConfigDict(dict(
      epochs=100, batch_size=256, momentum=0.9, augment=True, standardize=True,
      schedule='cosine', lr=0.2, min_lr=0.002,   # cosine: lr → min_lr
      step_lr=25.0, step_epochs=20,              # step (ImageNet-1K): ÷10 every step_epochs
      feature_batch_size=500,
      knn=knn_config(), semi=semi_config(), tsne=tsne_config()))


def online_eval_config():
  """Online evaluation inside the pretraining job (`config.online_eval`). The online classifier is
  solo-learn's: a linear head on the stop-gradient encoder features of both training views,
  trained in the same step by SGD (momentum 0.9, lr 0.1, no weight decay) on the labels the
  stream carries, the lr decayed to 0 by a cosine over the run (`lr_schedule='cosine'`, as
  solo-learn's scheduler decays its classifier; `'constant'`: fixed lr); `standardize` (default)
  puts a BatchNorm without scale and bias before it (MAE's probe head). On the demo's frozen
  encoders each adds about 3 points at the same budget (docs/evaluation.md). Every `every_steps`
  (0: every `every_epochs` epochs) and at the last step, the job reports the head's top-1/top-5
  on the test split and weighted kNN (`knn_k`, T = `temperature`, the probe job's protocol) of
  the encoder against `bank_size` train images (0: all), test-transformed."""
  return ml_collections.ConfigDict(dict(
      enabled=True, lr=0.1, lr_schedule='cosine', momentum=0.9, standardize=True, every_steps=0,
      every_epochs=1.0, bank_size=10_000, knn_k=(20, 200), temperature=0.07, batch_size=500))
