"""benchmarks/loss_diagnostics.py (issue #20): its decomposition of EMI's and MINC's gradients
adds up to the loss's own gradient, and its staleness is 0 where the summary is the batch's."""
import importlib.util
import os

import numpy as np
import pytest

from infomax_jax import train
from tests.tiny import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location(
    'loss_diagnostics', os.path.join(ROOT, 'benchmarks', 'loss_diagnostics.py'))
loss_diagnostics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(loss_diagnostics)


def _diagnose(tmp_path, loss, **overrides):
  config = tiny_config(loss, **{'data.source': 'synthetic', **overrides})
  train.train_and_evaluate(config, str(tmp_path))
  results = loss_diagnostics.diagnose_workdir(str(tmp_path), batches=1)
  assert sorted(results['steps']) == [2, 4]
  return config, results['steps']


@pytest.mark.slow   # a tiny run each
def test_emi_terms_add_up_to_the_loss_gradient(tmp_path):
  config, steps = _diagnose(tmp_path, 'emi')
  dim = config.projector.dims[-1]
  for figures in steps.values():
    # loss = −(I_a + I_b)/(2P) and only I_a depends on z1, through ½ logdet C_zz − ½ logdet C
    np.testing.assert_allclose(figures['grad_norm_loss'] * 2 * dim,
                               figures['grad_norm_mi_taylor'], rtol=1e-4)
    terms = (figures['grad_norm_entropy_term']**2 + figures['grad_norm_joint_term']**2
             + 2 * figures['grad_norm_entropy_term'] * figures['grad_norm_joint_term']
             * figures['cos_entropy_vs_joint_term'])
    np.testing.assert_allclose(np.sqrt(terms), figures['grad_norm_mi_taylor'], rtol=1e-3)
    for name in ('series_factor_joint', 'series_factor_z_block'):
      quantiles = figures[name]
      assert 0.0 < quantiles['q10'] <= quantiles['q50'] <= quantiles['q90'] <= 1.0
    assert figures['mi_exact_nats'] > 0.0 and -1.0 <= figures['cos_grad_taylor_vs_exact'] <= 1.0

  with pytest.raises(ValueError, match='batches=0: expected at least 1'):
    loss_diagnostics.diagnose_workdir(str(tmp_path), batches=0)


@pytest.mark.slow
def test_minc_terms_add_up_and_a_batch_summary_is_not_stale(tmp_path):
  # beta = 0 with online targets: Λ' is the batch's own tᵀt/N
  _, steps = _diagnose(tmp_path, 'minc', **{'loss.beta': 0.0, 'loss.target': 'online'})
  for figures in steps.values():
    terms = (figures['grad_norm_attraction']**2 + figures['grad_norm_repulsion']**2
             + 2 * figures['grad_norm_attraction'] * figures['grad_norm_repulsion']
             * figures['cos_attraction_vs_repulsion'])
    np.testing.assert_allclose(np.sqrt(terms), figures['grad_norm_loss'], rtol=1e-3)
    assert figures['staleness_updated_Lam'] < 1e-6 < figures['staleness_carried_Lam']
    assert figures['cos_z1_t1'] == pytest.approx(1.0, abs=1e-6)
    assert figures['target_distance'] < 1e-6


def test_other_losses_are_refused(tmp_path):
  config = tiny_config('spectral')
  (tmp_path / 'config.json').write_text(config.to_json_best_effort())
  with pytest.raises(ValueError, match="trained 'spectral'; this diagnosis takes emi, minc"):
    loss_diagnostics.diagnose_workdir(str(tmp_path), batches=1)
