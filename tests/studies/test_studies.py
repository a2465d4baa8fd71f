"""Studies end to end through launch.py on real CIFAR-10 JPEGs at tiny size: the table's rows
and columns, finite numbers, the PCA rows, real PNG figures, learning-rate tuning, seeds and
members trained together (resuming and bad values: test_studies_resume.py)."""

import csv
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from PIL import Image

import data_fixtures
from flax_cae.evaluation import pca as baselines
from flax_cae import models
from flax_cae.data import pipeline
from flax_cae.runtime.xla import init_variables

# End-to-end runs that take the default suite past CI's 15 minutes (README: -m slow).
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIGURES = ('psnr_ssim.png', 'validation_psnr.png', 'reconstructions.png')
FLOAT_COLUMNS = ('test_psnr', 'test_ssim', 'test_mse', 'bottleneck_floats', 'compression_ratio')


@pytest.fixture(scope='module')
def cifar(tmp_path_factory):
  """100 real CIFAR-10 training JPEGs (10 per class) and a data_dir to prepare them in."""
  tmp = tmp_path_factory.mktemp('cifar')
  return str(data_fixtures.cifar_jpeg_tree(tmp, per_class=10)), str(tmp / 'tfds')


def tiny(cifar, workdir, study, **overrides):
  """launch.py flags: a study config shrunk to 60 train / 20 validation / 20 test images."""
  root, data_dir = cifar
  values = {
      'data.name': 'image_folder', 'data.source_dir': root, 'data.data_dir': data_dir,
      'data.download': False, 'data.image_size': '(32, 32)', 'data.channels': 3,
      'data.validation_size': 20, 'data.test_size': 20, 'model.latent_dim': 16,
      'model.widths': '(8, 8, 16, 16)', 'model.hidden_dim': 32, 'batch_size': 20,
      'eval_batch_size': 20, 'num_epochs': 2, 'eval_every_epochs': 1,
      'checkpoint_every_epochs': 1, 'num_sample_images': 4, 'study.num_grid_images': 4,
      **overrides}
  return [f'--config=configs/studies/{study}.py', f'--workdir={workdir}',
          *(f'--config.{k}={v}' for k, v in values.items())]


def launch(flags, timeout=900):
  proc = subprocess.run([sys.executable, 'launch.py', *flags], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  return proc.returncode, proc.stderr + proc.stdout  # (the study's table ends on stdout)


def read_table(workdir):
  with open(os.path.join(workdir, 'study.csv')) as f:
    rows = list(csv.DictReader(f))
  md = open(os.path.join(workdir, 'study.md')).read()
  return rows, md


def assert_study(workdir, members):
  """The table has a row per member (in order) and a PCA row per compressing bottleneck,
  every number finite; the figures are real pictures."""
  rows, md = read_table(workdir)
  names = [r['member'] for r in rows]
  assert names[:len(members)] == list(members), names
  for r in rows:
    for key in FLOAT_COLUMNS:
      assert np.isfinite(float(r[key])), (r['member'], key, r[key])
    assert 5.0 < float(r['test_psnr']) < 60.0 and -1.0 < float(r['test_ssim']) <= 1.0
    assert f"| {r['member']} |" in md
  model_rows = rows[:len(members)]
  pca_rows = rows[len(members):]
  compressing = {int(r['bottleneck_floats']) for r in model_rows if float(r['compression_ratio']) > 1}
  assert {int(r['bottleneck_floats']) for r in pca_rows} == compressing
  assert all(r['member'].startswith('PCA (') for r in pca_rows)
  for name in FIGURES:
    with Image.open(os.path.join(workdir, name)) as im:
      assert im.format == 'PNG' and min(im.size) > 200
      pixels = np.asarray(im.convert('L'))
      assert pixels.std() > 10  # not a blank canvas
  return model_rows, pca_rows


def test_s1_optimizers_study_tunes_rates(tmp_path, cifar):
  workdir = str(tmp_path / 'opt')
  rc, log = launch(tiny(cifar, workdir, 's1_optimizers', **{
      'study.only': 'adam,sgd_momentum', 'study.train_together': 'yes'}))
  assert rc == 0, log[-4000:]
  rows, _ = assert_study(workdir, ['adam', 'sgd_momentum'])
  assert f'Results: {workdir}/study.md' in log and '| adam |' in log  # the end of the output
  with open(os.path.join(workdir, 'tuning.csv')) as f:
    tuning = list(csv.DictReader(f))
  assert len(tuning) == 6  # 2 members x 3 rates
  for r, center in zip(rows, (1e-3, 1e-2)):
    tried = [float(t['learning_rate']) for t in tuning if t['member'] == r['member']]
    assert tried == pytest.approx([0.3 * center, center, 3 * center])
    chosen = [t for t in tuning if t['member'] == r['member'] and t['chosen'] == 'True']
    assert len(chosen) == 1 and float(r['learning_rate']) == float(chosen[0]['learning_rate'])
    assert r['learning_rate_tuned'] == 'True'
    best = max(float(t['validation_psnr']) for t in tuning if t['member'] == r['member'])
    assert float(chosen[0]['validation_psnr']) == best
  # Each member's three tuning runs differ only in the rate: they trained together.
  groups = os.listdir(os.path.join(workdir, 'groups'))
  assert sorted(groups) == ['tune_adam_lr_0.0003+0.001+0.003', 'tune_sgd_momentum_lr_0.003+0.01+0.03']


def test_s1_losses_study_with_seeds(tmp_path, cifar):
  workdir = str(tmp_path / 'losses')
  rc, log = launch(tiny(cifar, workdir, 's1_losses', **{
      'study.only': 'mse,l1+mse_1:10,l1+mse_1:2', 'study.num_seeds': 2,
      'study.train_together': 'yes'}))
  assert rc == 0, log[-4000:]
  rows, pca = assert_study(workdir, ['mse', 'l1+mse_1:10', 'l1+mse_1:2'])
  assert [r['seeds'] for r in rows] == ['2', '2', '2']
  assert all(float(r['test_psnr_std']) > 0 for r in rows)  # two seeds, two models
  assert ' ± ' in read_table(workdir)[1]
  assert [r['member'] for r in pca] == ['PCA (16 floats)']
  # mse's two seeds form one group; the l1+mse members (alpha and seed differ) another.
  groups = sorted(os.listdir(os.path.join(workdir, 'groups')))
  assert groups == ['l1+mse_1:10_seed0+l1+mse_1:10_seed1+l1+mse_1:2_seed0+l1+mse_1:2_seed1',
                    'mse_seed0+mse_seed1']


def test_s1_architectures_study_marks_skips(tmp_path, cifar):
  workdir = str(tmp_path / 'arch')
  # Each model with its own widths (BaseCAE has three stages, the others four). Four of the
  # six members (the other two differ from these only in a skip set or a resize).
  names = ['base', 'improved', 'improved_skip_134', 'improved_res_conv']
  rc, log = launch(tiny(cifar, workdir, 's1_architectures', **{
      'model.widths': '()', 'study.only': ','.join(names)}))
  assert rc == 0, log[-4000:]
  rows, pca = assert_study(workdir, names)
  by_name = {r['member']: r for r in rows}
  assert 'not a compression' in by_name['improved_skip_134']['note']
  assert float(by_name['improved_skip_134']['compression_ratio']) < 1
  assert rows[0]['parameters'] != rows[1]['parameters']  # base and improved really differ
  for name in ('base', 'improved', 'improved_res_conv'):
    assert by_name[name]['bottleneck_floats'] == '16' and by_name[name]['note'] == ''
  assert int(by_name['improved_res_conv']['parameters']) > int(by_name['improved']['parameters'])
  assert [r['member'] for r in pca] == ['PCA (16 floats)']
  assert not os.path.exists(os.path.join(workdir, 'groups'))  # CPU default: one by one


def test_pca_is_the_best_linear_code():
  """PCA's reconstructions equal numpy's SVD projection, and no other k-dimensional
  linear code (a random one) does better on the fitted images."""
  rng = np.random.default_rng(0)
  basis = rng.normal(size=(5, 8 * 8 * 3))
  codes = rng.normal(size=(64, 5))
  images = np.clip(128 + 12 * codes @ basis, 0, 255).astype(np.uint8).reshape(64, 8, 8, 3)
  split = pipeline.Split('train', 64, (8, 8, 3), images=jnp.asarray(images))
  pca = baselines.PCA(split)
  x = images.reshape(64, -1) / 255.0
  mean = x.mean(0)
  _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  for k in (1, 3, 5):
    ours = np.asarray(pca.reconstruct(images, k)).reshape(64, -1)
    theirs = np.clip((x - mean) @ vt[:k].T @ vt[:k] + mean, 0, 1)
    np.testing.assert_allclose(ours, theirs, atol=2e-4)
    q, _ = np.linalg.qr(rng.normal(size=(x.shape[1], k)))
    other = np.clip((x - mean) @ q @ q.T + mean, 0, 1)
    assert np.mean((ours - x) ** 2) <= np.mean((other - x) ** 2)
  # Five components hold all of it (the images are rank 5 up to uint8 rounding).
  assert np.mean((np.asarray(pca.reconstruct(images, 5)).reshape(64, -1) - x) ** 2) < 1e-5


@pytest.mark.parametrize('name', ['improved_cae_res_interp', 'improved_cae_res_conv'])
def test_encoder_residual_models_keep_the_bottleneck(name):
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(dict(name=name, latent_dim=32, widths=(8, 8, 16, 16)))
  model = models.build_model(config, (32, 32, 3))
  plain = models.build_model(ml_collections.ConfigDict(dict(config, name='improved_cae')),
                             (32, 32, 3))
  assert models.bottleneck(model)['floats'] == models.bottleneck(plain)['floats'] == 32
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 32, 32, 3)), jnp.float32)
  variables = init_variables(model, {'params': jax.random.key(0), 'dropout': jax.random.key(0)}, x)
  out = model.apply(variables, x)['reconstruction']
  assert out.shape == x.shape and bool(jnp.all((out >= 0) & (out <= 1)))
  # The residual changes the function: the same weights without it give other outputs.
  plain_vars = init_variables(plain, {'params': jax.random.key(0), 'dropout': jax.random.key(0)}, x)
  if name == 'improved_cae_res_interp':  # same parameters, so compare on the same weights
    assert not np.allclose(plain.apply(variables, x)['reconstruction'], out)
  else:
    n = lambda v: sum(a.size for a in jax.tree.leaves(v['params']))
    assert n(variables) > n(plain_vars)
