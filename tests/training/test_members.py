"""Members trained together (vmapped over a member axis) end where training them one by one
ends: same parameters, same reported metrics."""

import os

import jax
import numpy as np
import pytest

from flax_cae.training import loop as train
from flax_cae.runtime.checkpoint import Checkpoints, Reader
from test_multihost import _without_layer_biases
from runs import tiny_config

# Float rounding only: the vmapped optimizer scales a unit-rate update by each member's
# rate (the single run folds the rate into its schedule), and XLA batches the member
# axis of every convolution. Conv/Dense biases feeding a BatchNorm are left out, as in
# test_multihost: their true gradient is zero, so Adam turns float noise into steps of
# either sign, and BatchNorm subtracts them anyway.
# The test trains with SGD at small rates (below) and allows 1e-4 absolute: on a 2-core AMD
# EPYC a decoder BatchNorm bias (values ~1e-3) ended 3e-5 apart; a member given another's
# rate or data would be off by its whole movement.
RTOL, ATOL = 2e-4, 1e-4


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _params(directory, step):
  ckpts = Reader(os.path.join(directory, 'checkpoints'))
  state, meta = ckpts.restore_raw(step)
  ckpts.close()
  return state['params'], meta


def test_vmapped_members_match_one_by_one(tmp_path, data_dir):
  # SGD: Adam turns float noise in a near-zero gradient into a full step of either sign
  # (seen on a 2-core AMD EPYC: a decoder BatchNorm bias 0.004 apart after 8 steps, at the
  # commit that passed on a Xeon), which says nothing about the member axis; SGD's steps
  # scale with the gradient, and small rates keep 8 steps from amplifying the rounding.
  numbers = [dict(seed=0, lr=0.02, alpha=0.1), dict(seed=1, lr=0.06, alpha=0.5)]
  configs = [tiny_config(data_dir, seed=n['seed'], **{'optimizer.name': 'sgd',
                                                      'optimizer.learning_rate': n['lr'],
                                                      'loss.name': 'l1+mse', 'loss.alpha': n['alpha']})
             for n in numbers]
  members = [(f'm{i}', str(tmp_path / 'together' / f'm{i}'), c) for i, c in enumerate(configs)]
  together = train.train_members(configs[0], str(tmp_path / 'together'), members)
  alone = [train.train_and_evaluate(c, str(tmp_path / f'alone{i}')) for i, c in enumerate(configs)]

  last = together[0]['total_steps']
  stacked, meta = _params(str(tmp_path / 'together'), last)
  assert meta['members']['learning_rate'] == pytest.approx([0.02, 0.06])
  for i, (t, a) in enumerate(zip(together, alone)):
    single, _ = _params(str(tmp_path / f'alone{i}'), last)
    ours, ref = _without_layer_biases(jax.tree.map(lambda x, i=i: x[i], stacked)), \
        _without_layer_biases(single)
    assert ours.keys() == ref.keys()
    for key in ref:
      np.testing.assert_allclose(ours[key], ref[key], rtol=RTOL, atol=ATOL, err_msg=key)
    assert t['best_step'] == a['best_step']
    for key in ('test_psnr', 'test_ssim', 'validation_loss'):
      assert t[key] == pytest.approx(a[key], rel=1e-3), key  # SSIM near 0.15: ~1.5e-4 seen
    assert os.path.isfile(tmp_path / 'together' / f'm{i}' / 'results.json')
    # Each member's own codec, fitted from its slice of the stacked parameters.
    assert os.path.isfile(tmp_path / 'together' / f'm{i}' / 'entropy_model.npz')
    assert t['codec_psnr'] == pytest.approx(a['codec_psnr'], abs=0.05)
    assert t['codec_bpp'] == pytest.approx(a['codec_bpp'], rel=0.05)
  # The members really differ: different seeds and rates give different models.
  assert not np.allclose(together[0]['test_psnr'], together[1]['test_psnr'], atol=1e-6)


def test_checkpoints_keep_each_members_best(tmp_path):
  ckpts = Checkpoints(str(tmp_path / 'ckpt'), keep=1)
  scores = {1: [10.0, 5.0], 2: [30.0, 6.0], 3: [12.0, 20.0], 4: [13.0, float('nan')],
            5: [14.0, 7.0]}
  for step, s in scores.items():
    ckpts.save(step, {'w': np.full(2, step, np.float32)}, {'epoch': step}, metrics={'score': s})
  ckpts.wait()
  # Member 0's best (step 2), member 1's best (step 3; NaN ranks last), the latest (step 5).
  assert ckpts.all_steps() == [2, 3, 5]
  ckpts.close()
