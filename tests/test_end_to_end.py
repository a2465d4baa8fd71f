"""launch.py end to end on real configs at tiny size, and a short run on real CIFAR-10 images
whose validation PSNR must rise clearly above that of predicting the mean image."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import data_fixtures
from configs import default
from flax_cae.measures import metrics
from flax_cae.training import loop as train
from flax_cae.data import sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(*flags, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, 'launch.py', *flags], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc.stderr + proc.stdout  # log lines on stderr, the results table on stdout


def test_launch_default_config(tmp_path):
  """The README's main command on the embedded default, shrunk to 2 epochs."""
  workdir = tmp_path / 'run'
  log = launch('--config=configs/default.py', f'--workdir={workdir}',
               f'--config.data.data_dir={tmp_path / "tfds"}', '--config.num_epochs=2',
               '--config.eval_every_epochs=1', '--config.optimizer.learning_rate=3e-4')
  assert 'bottleneck: 64 floats (latent 64) for an input of 625' in log
  assert 'img/s' in log and 'left' in log
  # What a user sees (not a terminal here: plain lines, no bar): short lines about this run.
  assert f'Preparing data set lfw_subset in {tmp_path / "tfds"}' in log
  assert f'Checkpoints, metrics, pictures and results go to {workdir}.' in log
  assert f'Results: {workdir / "results.md"}' in log and '| improved_cae | lfw_subset |' in log
  for noise in ('Unable to initialize backend', 'Downloading and preparing', 'Load dataset info'):
    assert noise not in log, noise
  assert not re.search(r'\d+/\d+ steps', log)  # the bar is for terminals
  assert not re.search(r'^[IWEF]\d{4} ', log, re.M)  # absl's prefix: only at --verbosity=1
  results = json.loads((workdir / 'results.json').read_text())
  assert results['model'] == 'improved_cae' and results['data'] == 'lfw_subset'
  assert results['total_steps'] == 10 and np.isfinite(results['test_psnr'])
  config = json.loads((workdir / 'config.json').read_text())
  assert config['optimizer']['learning_rate'] == 3e-4     # --config.* overrides reach the run
  assert len(list((workdir / 'reconstructions').glob('*.png'))) == 2


@pytest.mark.slow  # default-run time (CI's 15 minutes); `-m slow` runs it
def test_launch_s1_skip_config_on_mnist(tmp_path):
  """configs/mnist_improved_skip.py on real MNIST digits in the official IDX files."""
  data_fixtures.require_shared_data('mnist')
  src = data_fixtures.mnist_idx_dir(tmp_path, n_train=600, n_test=100)
  workdir = tmp_path / 'run'
  log = launch('--config=configs/mnist_improved_skip.py', f'--workdir={workdir}',
               f'--config.data.data_dir={tmp_path / "tfds"}', f'--config.data.source_dir={src}',
               '--config.data.download=False', '--config.data.validation_size=100',
               '--config.num_epochs=1', '--config.batch_size=100', '--config.eval_batch_size=50')
  # 28x28 digits: latent 256 + 14x14x16 + 7x7x32 + 4x4x64 + 4x4x128 skip floats > 784 pixels.
  assert 'bottleneck: 8032 floats' in log and 'nothing is compressed' in log
  assert 'this model compresses nothing' in log   # the one-line warning
  results = json.loads((workdir / 'results.json').read_text())
  assert results['bottleneck_floats'] == 8032 and results['compression_ratio'] < 1
  assert results['image_shape'] == [28, 28, 1] and results['total_steps'] == 5
  assert '| improved_cae | mnist | mse |' in (workdir / 'results.md').read_text()


@pytest.mark.slow  # default-run time (CI's 15 minutes); `-m slow` runs it
def test_short_real_cifar_run_beats_the_mean_image(tmp_path):
  data_fixtures.require_shared_data('cifar')
  root = data_fixtures.cifar_jpeg_tree(tmp_path, per_class=100)   # 1,000 real images
  c = default.get_config()
  c.data.update(name='image_folder', data_dir=str(tmp_path / 'tfds'), source_dir=str(root),
                download=False, image_size=(32, 32), channels=3, validation_size=100,
                test_size=100)
  c.model.update(latent_dim=128)
  c.batch_size = 32
  c.num_epochs = 6
  c.eval_every_epochs = 3
  c.checkpoint_every_epochs = 3
  results = train.train_and_evaluate(c, str(tmp_path / 'run'))

  kw = dict(data_dir=str(tmp_path / 'tfds'), source_dir=str(root), download=False,
            validation_size=100, test_size=100, image_size=(32, 32), channels=3)
  train_images = sources.load_arrays(sources.get_source('image_folder', 'train', **kw))['image']
  val_images = sources.load_arrays(sources.get_source('image_folder', 'validation', **kw))['image']
  assert len(train_images) == 800 and len(val_images) == 100
  baseline = metrics.mean_image_psnr(train_images, val_images)
  print(f'validation PSNR {results["validation_psnr"]:.2f} dB vs mean image {baseline:.2f} dB')
  assert results['validation_psnr'] > baseline + 3.0
  assert results['validation_ssim'] > 0.3
