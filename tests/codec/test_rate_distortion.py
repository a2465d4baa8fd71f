"""Compression in bytes: BD-rate, matched-rate interpolation, and the
rate-distortion study end to end through launch.py on the embedded default data."""

import csv
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from flax_cae.codec import rate_distortion as rd
from flax_cae.codec.bitstream import CodeModel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bd_rate_of_a_curve_needing_fewer_bits():
  rates = np.array([0.5, 1.0, 2.0, 4.0])
  psnr = 20 + 4 * np.log2(rates) + 0.3 * np.log2(rates) ** 2
  assert rd.bd_rate(rates, psnr, 0.8 * rates, psnr) == pytest.approx(-20.0, abs=1e-6)
  assert rd.bd_rate(rates, psnr, 1.5 * rates, psnr) == pytest.approx(50.0, abs=1e-6)
  assert rd.bd_rate(rates, psnr, rates, psnr) == pytest.approx(0.0, abs=1e-9)
  assert math.isnan(rd.bd_rate(rates, psnr, rates, psnr + 100))  # no common PSNR range


def test_psnr_at_interpolates_in_log_rate_inside_the_curve_only():
  pts = [{'bpp': 1.0, 'psnr': 20.0}, {'bpp': 4.0, 'psnr': 30.0}]
  assert rd.psnr_at(pts, 2.0) == pytest.approx(25.0)
  assert math.isnan(rd.psnr_at(pts, 0.5)) and math.isnan(rd.psnr_at(pts, 8.0))


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('rd') / 'study'
  data_dir = tmp_path_factory.mktemp('tfds')
  flags = {
      'config': 'configs/studies/rate_distortion.py', 'workdir': str(workdir),
      'config.data.name': 'lfw_subset', 'config.data.data_dir': str(data_dir),
      'config.data.validation_size': 20, 'config.data.test_size': 20,
      'config.study.only': 'best256,balle2017_lambda0p04',
      'config.model.latent_dim': 98,  # 25x25 faces: a 7x7x2 code
      'config.model.widths': '(8, 8, 8)',
      'config.study.members.balle2017_lambda0p04.model.widths': '(8, 8, 4)',
      # The Balle members name the recipe's 60 epochs themselves: shorten them here too.
      'config.study.members.balle2017_lambda0p04.num_epochs': 2,
      'config.num_epochs': 2, 'config.batch_size': 40, 'config.eval_batch_size': 20,
      'config.eval_every_epochs': 1, 'config.checkpoint_every_epochs': 1,
      'config.study.evals.rate_distortion.steps': '(1.0, 0.25)',
      'config.study.evals.rate_distortion.qualities': '(10, 50, 90)',
  }
  proc = subprocess.run([sys.executable, 'launch.py', *(f'--{k}={v}' for k, v in flags.items())],
                        cwd=ROOT, capture_output=True, text=True, timeout=900,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir


def test_the_study_writes_curves_of_every_code_and_codec(study):
  with open(study / 'rate_distortion.csv') as f:
    rows = list(csv.DictReader(f))
  methods = {r['method'] for r in rows}
  assert methods == {'best256', 'PCA (98 floats)', 'balle2017', 'JPEG', 'WebP'}
  counts = {m: sum(r['method'] == m for r in rows) for m in methods}
  assert counts == {'best256': 2, 'PCA (98 floats)': 2, 'balle2017': 1, 'JPEG': 3, 'WebP': 3}
  for r in rows:
    for key in ('bpp', 'bpp_payload', 'psnr', 'ssim'):
      assert math.isfinite(float(r[key])) and float(r[key]) > 0, r
    assert float(r['bpp_payload']) <= float(r['bpp'])
  # A finer quantizer step costs more bits and gives more PSNR, for a model and for PCA.
  for m in ('best256', 'PCA (98 floats)'):
    coarse, fine = [r for r in rows if r['method'] == m]
    assert float(coarse['bpp']) < float(fine['bpp']) and float(coarse['psnr']) < float(fine['psnr'])
  text = (study / 'rate_distortion.md').read_text()
  assert 'BD-rate' in text and '| balle2017 |' in text and 'PSNR (dB) at matched rates' in text
  with Image.open(study / 'rate_distortion.png') as im:
    assert im.size[0] > 500 and im.size[1] > 300
  assert (study / 'study.md').is_file()


def test_the_fitted_code_models_are_stored_beside_the_checkpoints(study):
  """Each point's quantizer steps and tables are saved where a decoder finds them: per
  step for the autoencoder and PCA (7x7x2 code: 2 channels), one learned table for Balle."""
  for d, channels in ((study / 'members' / 'best256' / 'code_models', 2),
                      (study / 'code_models' / 'pca98', 98)):
    for frac in ('1', '0.25'):
      m = CodeModel.load(str(d / f'code_model_step{frac}.npz'))
      assert m.channels == channels
      np.testing.assert_allclose(m.probs.sum(-1), 1.0, rtol=1e-6)
  balle_model = CodeModel.load(
      str(study / 'members' / 'balle2017_lambda0p04' / 'code_models' / 'code_model.npz'))
  assert balle_model.channels == 4 and np.all(balle_model.step == 1.0)
