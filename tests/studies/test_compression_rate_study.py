"""S2 end to end on real images: labels through the pipeline, LeNet-5 trained by the one loop
(beats chance on MNIST digits and CIFAR-10 photos), the compression-rate study with its
classifier, PCA rows and figures, and `python -m flax_cae.evaluate`."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import data_fixtures
from configs import default
from flax_cae.data import pipeline, sources

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(args, timeout=900):
  proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  return proc.returncode, proc.stderr + proc.stdout


@pytest.fixture(scope='module')
def mnist(tmp_path_factory):
  """Real t10k digits as official-named IDX files: 2,000 train, 500 test."""
  tmp = tmp_path_factory.mktemp('mnist')
  return str(data_fixtures.mnist_idx_dir(tmp, n_train=2000, n_test=500)), str(tmp / 'tfds')


@pytest.fixture(scope='module')
def cifar(tmp_path_factory):
  """300 real CIFAR-10 training JPEGs (30 per class)."""
  tmp = tmp_path_factory.mktemp('cifar')
  return str(data_fixtures.cifar_jpeg_tree(tmp, per_class=30)), str(tmp / 'tfds')


@pytest.mark.parametrize('device_memory_limit_mb', [2048, 0], ids=['on device', 'streamed'])
def test_labels_travel_with_their_images(mnist, device_memory_limit_mb):
  source_dir, data_dir = mnist
  c = default.get_config().data
  c.update(name='mnist', source_dir=source_dir, data_dir=data_dir, download=False,
           validation_size=100, device_memory_limit_mb=device_memory_limit_mb)
  mesh = pipeline.make_mesh()
  split = pipeline.load_split(c, 'train', mesh, 8)
  want = sources.load_arrays(sources.get_source('mnist', 'train', **pipeline.source_kwargs(c)))
  assert split.num_classes == 10 and split.n == 1900
  idx = np.array([5, 0, 1899, 77, 1234, 3, 999, 42])
  if split.on_device:
    images, labels = (np.asarray(x)[idx] for x in (split.images, split.labels))
  else:
    images, labels = (np.asarray(x) for x in split.global_batch(idx, pipeline.batch_sharding(mesh)))
  np.testing.assert_array_equal(images, want['image'][idx])
  np.testing.assert_array_equal(labels, want['label'][idx])
  assert labels.dtype == np.int32 and len(set(want['label'].tolist())) == 10


def lenet_flags(workdir, data_dir, **values):
  return ['launch.py', '--config=configs/mnist_lenet5.py', f'--workdir={workdir}',
          *(f'--config.{k}={v}' for k, v in {'data.data_dir': data_dir, 'data.download': False,
                                             'eval_batch_size': 100, **values}.items())]


def test_lenet5_learns_mnist_digits(tmp_path, mnist):
  source_dir, data_dir = mnist
  workdir = tmp_path / 'lenet'
  rc, log = run(lenet_flags(workdir, data_dir, **{
      'data.source_dir': source_dir, 'data.validation_size': 200, 'num_epochs': 3}))
  assert rc == 0, log[-3000:]
  results = json.loads((workdir / 'results.json').read_text())
  assert results['task'] == 'classification' and results['eval_split'] == 'test'
  assert results['test_accuracy'] > 0.8, results  # chance: 0.1 (measured: ~0.9)
  assert 'bottleneck_floats' not in results and results['parameters'] == 61706
  assert '| lenet5 | mnist | ' in (workdir / 'results.md').read_text()
  assert not (workdir / 'reconstructions').exists()  # a classifier draws no reconstructions


@pytest.mark.slow
def test_lenet5_learns_cifar10_photos(tmp_path, cifar):
  root, data_dir = cifar
  workdir = tmp_path / 'lenet'
  rc, log = run(lenet_flags(workdir, data_dir, **{
      'data.name': 'image_folder', 'data.source_dir': root, 'data.image_size': '(32, 32)',
      'data.channels': 3, 'data.validation_size': 30, 'data.test_size': 60,
      'batch_size': 30, 'num_epochs': 15}))
  assert rc == 0, log[-3000:]
  results = json.loads((workdir / 'results.json').read_text())
  assert results['test_accuracy'] >= 0.2, results  # chance: 0.1, on 210 training photos


def s2_flags(cifar, workdir, **overrides):
  root, data_dir = cifar
  values = {
      'data.name': 'image_folder', 'data.source_dir': root, 'data.data_dir': data_dir,
      'data.download': False, 'data.image_size': '(32, 32)', 'data.channels': 3,
      'data.validation_size': 40, 'data.test_size': 60, 'batch_size': 25, 'eval_batch_size': 20,
      'num_epochs': 2, 'num_sample_images': 4, 'study.num_grid_images': 4,
      'study.only': 'rate_2,rate_8,rate_16', **overrides}
  return ['launch.py', '--config=configs/studies/s2_compression_rate.py', f'--workdir={workdir}',
          *(f'--config.{k}={v}' for k, v in values.items())]


@pytest.fixture(scope='module')
def study(tmp_path_factory, cifar):
  workdir = tmp_path_factory.mktemp('s2') / 'study'
  rc, log = run(s2_flags(cifar, workdir))
  assert rc == 0, log[-4000:]
  with open(workdir / 'study.csv') as f:
    rows = list(csv.DictReader(f))
  return workdir, rows


@pytest.mark.slow
def test_compression_rate_study_rows_accuracies_pca_and_figures(study):
  workdir, rows = study
  cae, pca = rows[:3], rows[3:]  # (rate 4 left out to keep the suite short)
  assert [r['member'] for r in cae] == ['rate_2', 'rate_8', 'rate_16']
  assert [int(r['x']) for r in cae] == [2, 8, 16]
  # Height and width shrink by the rate; 32 code channels.
  assert [int(r['bottleneck_floats']) for r in cae] == [8192, 512, 128]
  assert cae[0]['note'] == 'not a compression'
  # PCA with each compressing rate's floats (rate 2 keeps more floats than the image has).
  assert [(r['member'], int(r['x'])) for r in pca] == [('PCA (128 floats)', 16),
                                                       ('PCA (512 floats)', 8)]
  classifier = json.loads((workdir / 'classifier' / 'results.json').read_text())
  assert classifier['model'] == 'lenet5'
  for r in rows:
    original, recon, ratio = (float(r[k]) for k in (
        'accuracy_original', 'accuracy_reconstruction', 'accuracy_ratio'))
    # The classifier on the same 60 test images as in its own run: the same accuracy.
    assert original == pytest.approx(classifier['test_accuracy'], abs=1e-6)
    assert 0.0 <= recon <= 1.0 and ratio == pytest.approx(recon / original, rel=1e-5)
    assert math.isfinite(float(r['test_psnr']))
  md = (workdir / 'study.md').read_text()
  assert '| member | rate | test PSNR (dB) |' in md and 'classifier accuracy: originals' in md
  assert 'Classifier: lenet5' in md
  for name in ('rate_curves.png', 'codes.png', 'reconstructions.png', 'psnr_ssim.png'):
    with Image.open(workdir / name) as im:
      assert im.format == 'PNG' and min(im.size) > 200
      assert np.asarray(im.convert('L')).std() > 10  # not a blank canvas


@pytest.mark.slow
def test_evaluate_command_scores_a_member_like_the_study(study):
  workdir, rows = study
  member = workdir / 'members' / 'rate_8'
  rc, out = run(['-m', 'flax_cae.evaluate', f'--workdir={member}',
                 f'--classifier={workdir / "classifier"}'])
  assert rc == 0, out[-3000:]
  assert '| rate_cae | 512 |' in out
  got = json.loads((member / 'classifier_eval.json').read_text())
  row = next(r for r in rows if r['member'] == 'rate_8')
  for key in ('accuracy_original', 'accuracy_reconstruction', 'accuracy_ratio', 'psnr'):
    assert got[key] == pytest.approx(float(row[key if key != 'psnr' else 'test_psnr']),
                                     rel=1e-4), key
  assert got['count'] == 60 and got['split'] == 'test'


@pytest.mark.slow
@pytest.mark.parametrize('args,expected', [
    (['--workdir={classifier}', '--classifier={member}'], 'holds a classifier, not an autoencoder'),
    (['--workdir={member}', '--classifier={member}'], 'not a classifier'),
    (['--workdir={member}', '--classifier={missing}'], 'holds no finished run (no results.json)'),
], ids=['swapped', 'not a classifier', 'unfinished'])
def test_evaluate_command_bad_workdirs_are_one_sentence(study, tmp_path, args, expected):
  workdir, _ = study
  paths = dict(classifier=workdir / 'classifier', member=workdir / 'members' / 'rate_16',
               missing=tmp_path / 'nothing')
  rc, out = run(['-m', 'flax_cae.evaluate', *(a.format(**paths) for a in args)])
  lines = [l for l in out.splitlines() if l.startswith('flax-cae: error:')]
  assert rc == 2 and len(lines) == 1 and expected in lines[0], out[-2000:]
  assert 'Traceback' not in out


@pytest.mark.slow
def test_bad_classifier_settings_are_one_sentence(tmp_path, cifar, study):
  workdir, _ = study
  rc, log = run(s2_flags(cifar, tmp_path / 'w', **{'study.evals.classifier.train.model.name': 'rate_cae'}))
  lines = [l for l in log.splitlines() if l.startswith('flax-cae: error:')]
  assert rc == 2 and len(lines) == 1 and 'which is not a classifier' in lines[0], log[-2000:]
  rc, log = run(s2_flags(cifar, tmp_path / 'w2', **{
      'study.evals.classifier.workdir': workdir / 'members' / 'rate_16'}))
  lines = [l for l in log.splitlines() if l.startswith('flax-cae: error:')]
  assert rc == 2 and len(lines) == 1 and 'not a classifier' in lines[0], log[-2000:]
  assert not (tmp_path / 'w2' / 'members').exists()


@pytest.mark.slow
def test_a_given_classifier_is_reused_not_retrained(tmp_path, cifar, study):
  workdir, rows = study
  out = tmp_path / 'again'
  rc, log = run(s2_flags(cifar, out, **{
      'study.evals.classifier.workdir': workdir / 'classifier', 'study.only': 'rate_16',
      'study.x_axis': '', 'num_epochs': 1}))
  assert rc == 0, log[-3000:]
  assert not (out / 'classifier').exists()
  with open(out / 'study.csv') as f:
    again = list(csv.DictReader(f))
  # The same classifier on the same test images: the same accuracy on the originals.
  assert again[0]['member'] == 'rate_16' and float(again[0]['accuracy_ratio']) >= 0
  assert float(again[0]['accuracy_original']) == pytest.approx(float(rows[2]['accuracy_original']))
