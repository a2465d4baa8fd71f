"""The best256 recipe (configs/cifar10_best256.py) on real CIFAR-10 photos, briefly: its code is
256 floats and nothing else, and it already beats predicting the mean training image."""

import json
import os
import subprocess
import sys

import pytest

import data_fixtures
from flax_cae.measures import metrics
from flax_cae.data import sources

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# Default-run time (CI's 15 minutes on a slow 2-core machine); the default run keeps the
# res_cae code and stage_blocks tests (test_models.py) and the config's checks
# (test_study_configs.py). `-m slow` runs it.
@pytest.mark.slow
def test_best256_is_a_256_float_code_that_beats_the_mean_image(tmp_path):
  data_fixtures.require_shared_data('cifar')
  tree = data_fixtures.cifar_jpeg_tree(tmp_path, per_class=30)  # 300 real photos
  workdir, data_dir = tmp_path / 'run', tmp_path / 'tfds'
  data = {'name': 'image_folder', 'source_dir': tree, 'data_dir': data_dir, 'download': False,
          'image_size': '(32, 32)', 'channels': 3, 'validation_size': 30, 'test_size': 50}
  flags = {**{f'data.{k}': v for k, v in data.items()}, 'num_epochs': 3, 'batch_size': 20,
           'eval_batch_size': 40, 'eval_every_epochs': 2, 'checkpoint_every_epochs': 2}
  proc = subprocess.run([sys.executable, 'launch.py', '--config=configs/cifar10_best256.py',
                         f'--workdir={workdir}', *(f'--config.{k}={v}' for k, v in flags.items())],
                        cwd=ROOT, capture_output=True, text=True, timeout=900,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'bottleneck: 256 floats (latent 256) for an input of 3072' in proc.stderr + proc.stdout
  results = json.loads((workdir / 'results.json').read_text())
  assert results['model'] == 'res_cae' and results['bottleneck_floats'] == 256

  # The mean training image, scored like the model (mean of per-image PSNR on the test split).
  kw = dict(data_dir=str(data_dir), source_dir=str(tree), download=False, validation_size=30,
            test_size=50, image_size=(32, 32), channels=3)
  train = sources.load_arrays(sources.get_source('image_folder', 'train', **kw))['image']
  test = sources.load_arrays(sources.get_source('image_folder', 'test', **kw))['image']
  mean_psnr = metrics.mean_image_psnr(train, test)
  assert results['test_psnr'] > mean_psnr + 1.0, (results['test_psnr'], mean_psnr)
