"""S3 and S4 on real images: noise drawn on the device (fixed per image for evaluation),
denoisers that beat their noisy input, colored MNIST, the VAE's KL and prior samples, the
NL-means row, both studies end to end through launch.py, and flax_cae.visualize."""

import csv
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import data_fixtures
from flax_cae.data import noise
from flax_cae.data import builders, sources

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(args, timeout=900):
  proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  return proc.returncode, proc.stderr + proc.stdout


def errors_of(log):
  return [l for l in log.splitlines() if l.startswith('flax-cae: error:')]


def assert_png(path, min_size=100):
  with Image.open(path) as im:
    assert im.format == 'PNG' and min(im.size) >= min_size, (path, im.size)
    assert np.asarray(im.convert('L')).std() > 5, f'{path} is blank'


@pytest.fixture(scope='module')
def mnist(tmp_path_factory):
  """Real t10k digits as official-named IDX files: 1,500 train, 150 test."""
  tmp = tmp_path_factory.mktemp('mnist')
  return str(data_fixtures.mnist_idx_dir(tmp, n_train=1500, n_test=150)), str(tmp / 'tfds')


# --- noise ---------------------------------------------------------------------------


def test_evaluation_noise_depends_only_on_the_image_index():
  x = jax.random.uniform(jax.random.key(1), (6, 12, 12, 3))
  p = ('gaussian', 0.2, 0.05)
  whole = noise.corrupt(x, noise.eval_keys(np.arange(6)), p)
  one = noise.corrupt(x[4:5], noise.eval_keys(np.array([4])), p)
  np.testing.assert_array_equal(np.asarray(whole[4:5]), np.asarray(one))
  assert float(jnp.min(whole)) >= 0 and float(jnp.max(whole)) <= 1
  # Away from the clipping, the noise has the configured standard deviation.
  mid = jnp.full((64, 16, 16, 1), 0.5)
  d = noise.corrupt(mid, noise.eval_keys(np.arange(64)), ('gaussian', 0.05, 0.0)) - mid
  assert abs(float(jnp.std(d)) - 0.05) < 0.002
  # Training noise changes with the step (new noise every epoch).
  a = noise.corrupt(x, noise.train_keys(0, 3, 6), p)
  b = noise.corrupt(x, noise.train_keys(0, 4, 6), p)
  assert not np.allclose(np.asarray(a), np.asarray(b))


def test_salt_and_pepper_replaces_the_configured_share_of_pixels():
  x = jnp.full((32, 20, 20, 3), 0.5)
  y = np.asarray(noise.corrupt(x, noise.eval_keys(np.arange(32)), ('salt_pepper', 0.1, 0.2)))
  changed = (y != 0.5).any(-1)
  assert abs(changed.mean() - 0.2) < 0.02
  assert set(np.unique(y[changed])) == {0.0, 1.0}
  assert abs((y[changed] == 0).mean() - 0.5) < 0.05  # salt and pepper alike
  assert (y == y[..., :1]).all()  # all channels of a pixel alike


# --- colored MNIST -------------------------------------------------------------------


def test_colored_mnist_tints_each_digit_by_its_seeded_colour(mnist, tmp_path):
  source_dir, data_dir = mnist
  # The rule, on the builder's examples (in file order; TFDS shuffles them when it writes).
  paths = builders.ColoredMnist.find_sources(source_dir)
  examples = dict(builders.ColoredMnist(data_dir=str(tmp_path))._examples(paths, 'train'))
  digits = builders.read_idx(paths['train-images-idx3-ubyte.gz'], 3, '')
  labels = builders.read_idx(paths['train-labels-idx1-ubyte.gz'], 1, '')
  colours = np.random.default_rng((4, 0)).uniform(0.25, 1.0, (1500, 3))
  for i in (0, 1, 777, 1499):
    want = np.round(digits[i][..., None].astype(np.float64) * colours[i]).astype(np.uint8)
    np.testing.assert_array_equal(examples[i]['image'], want)
    assert examples[i]['label'] == labels[i]
  # Prepared: 28x28x3, the same digits' labels as mnist.
  kw = dict(data_dir=data_dir, source_dir=source_dir, download=False, validation_size=0)
  colored = sources.load_arrays(sources.get_source('colored_mnist', 'train', **kw))
  assert colored['image'].shape == (1500, 28, 28, 3)
  assert sorted(colored['label'].tolist()) == sorted(labels.tolist())
  assert (colored['image'].reshape(1500, -1, 3).std(axis=1) > 0).all(axis=None)


# --- denoising through launch.py -------------------------------------------------------


def denoise_flags(workdir, mnist, **values):
  source_dir, data_dir = mnist
  values = {
      'data.name': 'colored_mnist', 'data.source_dir': source_dir, 'data.data_dir': data_dir,
      'data.download': False, 'data.validation_size': 200, 'data.noise.kind': 'gaussian',
      'data.noise.sigma': 0.3, 'model.name': 's4_ae', 'model.activation': 'relu',
      'model.batch_norm': True, 'batch_size': 50, 'eval_batch_size': 100, 'num_epochs': 4,
      'eval_every_epochs': 2, 'checkpoint_every_epochs': 2, 'num_sample_images': 4,
      'log_every_seconds': 0.0, **values}
  return ['launch.py', '--config=configs/default.py', f'--workdir={workdir}',
          *(f'--config.{k}={v}' for k, v in values.items())]


@pytest.mark.slow
def test_a_denoiser_beats_its_noisy_input(tmp_path, mnist):
  rc, log = run(denoise_flags(tmp_path / 'ae', mnist, snapshot_every_epochs=1))
  assert rc == 0, log[-3000:]
  # Snapshots every epoch (26 steps), evaluations every second one.
  assert sorted(p.name for p in (tmp_path / 'ae' / 'reconstructions').glob('*.png')) == [
      f'step_{s:08d}.png' for s in (26, 52, 78, 104)]
  r = json.loads((tmp_path / 'ae' / 'results.json').read_text())
  assert r['test_snr'] > r['test_noisy_snr'] + 1.0, r  # measured: ~+5 dB after 4 epochs
  assert r['test_psnr'] > r['test_noisy_psnr'] and r['bottleneck_floats'] == 64
  grid = Image.open(sorted((tmp_path / 'ae' / 'reconstructions').glob('*.png'))[-1])
  assert grid.size[1] > 3 * 64  # three rows: clean, noisy input, output



BAD_NOISE = [
    ({'data.noise.kind': 'speckle'}, "valid data.noise.kind names are: gaussian, none, salt_pepper"),
    ({'data.noise.sigma': 0.0}, 'data.noise.sigma must be a number in (0, 1]'),
    ({'data.noise.kind': 'salt_pepper', 'data.noise.amount': 1.5},
     'data.noise.amount must be in (0, 1]'),
    ({'model.name': 'conv_vae', 'model.beta': -1.0}, 'model.beta must be a number >= 0'),
]


@pytest.mark.parametrize('values,expected', BAD_NOISE, ids=[str(v) for v, _ in BAD_NOISE])
def test_bad_noise_and_vae_values_are_one_sentence(tmp_path, mnist, values, expected):
  rc, log = run(denoise_flags(tmp_path / 'w', mnist, **values))
  lines = errors_of(log)
  assert rc == 2 and len(lines) == 1 and expected in lines[0], log[-2000:]
  assert not (tmp_path / 'w').exists()


# --- the studies ---------------------------------------------------------------------


def read_rows(workdir):
  with open(workdir / 'study.csv') as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
def test_s4_study_denoises_colored_mnist_with_nl_means_and_visualizes(tmp_path, mnist):
  source_dir, data_dir = mnist
  workdir = tmp_path / 's4'
  rc, log = run(['launch.py', '--config=configs/studies/s4_colored_mnist.py',
                 f'--workdir={workdir}', *(f'--config.{k}={v}' for k, v in {
                     'data.source_dir': source_dir, 'data.data_dir': data_dir,
                     'data.download': False, 'data.validation_size': 200, 'num_epochs': 1,
                     'eval_every_epochs': 1, 'checkpoint_every_epochs': 1, 'batch_size': 50,
                     'eval_batch_size': 100, 'num_sample_images': 4,
                     'study.num_grid_images': 4, 'study.only': 'ae,vae'}.items())])
  assert rc == 0, log[-4000:]
  rows = read_rows(workdir)
  assert [r['member'] for r in rows] == ['ae', 'vae', 'PCA (16 floats)', 'PCA (64 floats)',
                                         'NL-means (gaussian sigma 0.2)']
  for r in rows:
    assert math.isfinite(float(r['test_snr'])) and math.isfinite(float(r['test_psnr']))
  noisy = [float(r['test_noisy_snr']) for r in rows if r['noise']]
  assert len(noisy) == 3 and max(noisy) - min(noisy) < 1e-3  # the same noisy test images
  nl = rows[-1]
  assert float(nl['test_snr']) > float(nl['test_noisy_snr'])  # NL-means does denoise
  assert float(rows[1]['test_kl']) > 0 and math.isnan(float(rows[0]['test_kl']))  # no KL
  md = (workdir / 'study.md').read_text()
  assert '| noise | noisy input PSNR (dB) | noisy input SNR (dB) |' in md and '| KL |' in md
  for member in ('ae', 'vae'):
    for name in ('tsne_2d', 'tsne_3d', 'interpolations', 'snapshots'):
      assert_png(workdir / 'members' / member / 'visualize' / f'{name}.png')
  # The VAE: KL reported at every evaluation, below the whole loss; samples from its prior.
  vae = workdir / 'members' / 'vae'
  val = [json.loads(l) for l in open(vae / 'metrics.jsonl') if '"validation"' in l]
  assert val and all(v['kl'] > 0 and v['loss'] > v['kl'] for v in val)
  assert json.loads((vae / 'results.json').read_text())['task'] == 'variational'
  assert_png(vae / 'samples' / 'step_00000026.png', min_size=64)  # one row of 4 samples
  # flax_cae.visualize as a command, on any finished workdir.
  before = os.path.getmtime(vae / 'visualize' / 'tsne_2d.png')
  rc, out = run(['-m', 'flax_cae.visualize', f'--workdir={vae}', '--max_points=60'])
  assert rc == 0 and 'tsne_3d: ' in out, out[-3000:]
  assert os.path.getmtime(vae / 'visualize' / 'tsne_2d.png') > before
  for name in ('psnr_ssim.png', 'loss_vs_time.png', 'reconstructions.png'):
    assert_png(workdir / name)


@pytest.mark.slow
def test_s3_study_compares_fc_ae_and_cae_for_compression_and_denoising(tmp_path):
  workdir = tmp_path / 's3'
  rc, log = run(['launch.py', '--config=configs/studies/s3_faces.py', f'--workdir={workdir}',
                 f'--config.data.data_dir={tmp_path / "tfds"}', '--config.num_epochs=2',
                 '--config.eval_every_epochs=1', '--config.checkpoint_every_epochs=1',
                 '--config.log_every_seconds=0', '--config.study.num_grid_images=4',
                 '--config.study.only=fc_ae,cae_denoise'])
  assert rc == 0, log[-4000:]
  rows = read_rows(workdir)
  assert [r['member'] for r in rows] == ['fc_ae', 'cae_denoise', 'PCA (64 floats)',
                                         'NL-means (gaussian sigma 0.1)']
  assert [r['noise'] for r in rows[:2]] == ['', 'gaussian sigma 0.1']
  assert {r['bottleneck_floats'] for r in rows[:2]} == {'64'}  # the same code size
  for r in rows:
    assert math.isfinite(float(r['test_psnr'])) and math.isfinite(float(r['test_snr']))
  assert_png(workdir / 'loss_vs_time.png')
  seconds = [json.loads(l)['seconds'] for l in open(workdir / 'members' / 'fc_ae' / 'metrics.jsonl')
             if '"train"' in l]
  assert seconds == sorted(seconds) and seconds[0] > 0


def test_a_member_noise_is_checked_like_any_other(tmp_path):
  """Members may differ in data.noise (S3 denoises and compresses in one study); a bad value
  in one is one sentence before anything is trained."""
  rc, log = run(['launch.py', '--config=configs/studies/s3_faces.py', f'--workdir={tmp_path / "w"}',
                 f'--config.data.data_dir={tmp_path / "tfds"}',
                 '--config.study.members.cae_denoise.data.noise.sigma=-0.1'], timeout=300)
  lines = errors_of(log)
  assert rc == 2 and len(lines) == 1, log[-2000:]
  assert "study member 'cae_denoise': data.noise.sigma must be a number in (0, 1]" in lines[0]
  assert '--config.study.members.cae_denoise.data.noise.sigma' in lines[0]
  assert not (tmp_path / 'w').exists()
