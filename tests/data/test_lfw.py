"""The `lfw` data set: TFDS's own prepared `lfw` read without TensorFlow, or the official
lfw.tgz (or its extracted folder), cropped to the face and resized; real faces throughout
(scikit-image's LFW subset laid out as LFW's 250x250 photos, data_fixtures.lfw_tree)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import data_fixtures
from flax_cae.data import builders, sources
from flax_cae.measures import metrics
from flax_cae.runtime.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = dict(image_size=(32, 32), channels=1)


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  """A TFDS data_dir holding TFDS's own `lfw` (10 people x 10 photos); and the tree it read."""
  tmp = tmp_path_factory.mktemp('lfw')
  tree = data_fixtures.tfds_lfw(tmp, tmp / 'tfds')
  return tmp / 'tfds', tree


def all_splits(**kw):
  """{(person, image bytes)} over train, validation and test, and the split sizes."""
  seen, sizes = [], []
  for split in sources.SPLITS:
    src = sources.get_source('lfw', split, validation_size=10, test_size=10, download=False,
                             **SIZE, **kw)
    arrays = sources.load_arrays(src)
    sizes.append(len(src))
    seen += [(src.class_names[l], im.tobytes()) for im, l in zip(arrays['image'], arrays['label'])]
  return seen, sizes


def expected_crop(path: Path) -> bytes:
  """The face as the README states it: rows 69-197, columns 61-189, bicubic to 32x32, gray."""
  with Image.open(path) as im:
    face = im.convert('L').crop((61, 69, 189, 197)).resize((32, 32), Image.Resampling.BICUBIC)
  return np.asarray(face, np.uint8).tobytes()


def test_tfds_own_lfw_is_read_where_prepared(tfds_dir):
  data_dir, tree = tfds_dir
  seen, sizes = all_splits(data_dir=str(data_dir))
  assert sizes == [80, 10, 10]
  # Every image is the face crop of one photo of the person its label names, each photo once.
  want = {(p.parent.name, expected_crop(p)) for p in (tree / 'lfw').glob('*/*.jpg')}
  assert len(want) == 100 and sorted(seen) == sorted(want)
  # Splits mix people (TFDS's stored order is by key hash, not by person).
  train_people = {p for p, _ in seen[:80]}
  assert len(train_people) == 10 and len({p for p, _ in seen[80:]}) >= 5


def test_lfw_tgz_and_its_extracted_folder_give_the_same_faces(tfds_dir, tmp_path):
  data_dir, tree = tfds_dir
  from_tfds, _ = all_splits(data_dir=str(data_dir))
  tarball_dir = tmp_path / 'official'
  tarball_dir.mkdir()
  data_fixtures.tar_folder(tree / 'lfw', tarball_dir / 'lfw.tgz', top_level=True)
  from_tgz, sizes = all_splits(data_dir=str(tmp_path / 'a'), source_dir=str(tarball_dir))
  from_folder, _ = all_splits(data_dir=str(tmp_path / 'b'), source_dir=str(tree))
  assert sizes == [80, 10, 10]
  assert from_tgz == from_folder  # same keys, so the same stored order
  assert sorted(from_tgz) == sorted(from_tfds)


def test_lfw_not_prepared_is_one_sentence_naming_both_ways(tmp_path):
  with pytest.raises(DataError) as e:
    sources.get_source('lfw', 'train', data_dir=str(tmp_path), download=False, **SIZE)
  msg = str(e.value)
  assert "TFDS's own lfw" in msg and 'lfw.tgz' in msg and builders.LFW_URL in msg
  assert '--config.data.source_dir' in msg and '\n' not in msg
  assert not (tmp_path / 'flax_cae_lfw').exists()


def test_tfds_lfw_in_another_format_is_one_sentence(tfds_dir, tmp_path):
  data_dir, _ = tfds_dir
  copy = tmp_path / 'tfds'
  shutil.copytree(data_dir / 'lfw', copy / 'lfw')
  info_path = copy / 'lfw' / '0.1.1' / 'dataset_info.json'
  info = json.loads(info_path.read_text())
  info['fileFormat'] = 'tfrecord'  # as `tfds build lfw` writes by default
  info_path.write_text(json.dumps(info))
  with pytest.raises(DataError) as e:
    sources.get_source('lfw', 'train', data_dir=str(copy), download=False, **SIZE)
  assert "TFDS's lfw in" in str(e.value) and 'is stored as tfrecord' in str(e.value)
  assert '`tfds build lfw --file_format=array_record`' in str(e.value) and '\n' not in str(e.value)
  assert not (copy / 'flax_cae_lfw').exists()  # the failed preparation left nothing behind


def test_training_on_tfds_lfw_through_launch(tfds_dir, tmp_path):
  data_dir, _ = tfds_dir
  workdir = tmp_path / 'run'
  flags = {'data.name': 'lfw', 'data.data_dir': data_dir, 'data.download': False,
           'data.image_size': '(32, 32)', 'data.channels': 1, 'data.validation_size': 10,
           'data.test_size': 10, 'model.latent_dim': 16, 'model.widths': '(8,8,16,16)',
           'batch_size': 20, 'eval_batch_size': 10, 'num_epochs': 100}
  proc = subprocess.run([sys.executable, 'launch.py', '--config=configs/default.py',
                         f'--workdir={workdir}', *(f'--config.{k}={v}' for k, v in flags.items())],
                        cwd=ROOT, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((workdir / 'results.json').read_text())
  assert results['data'] == 'lfw' and results['image_shape'] == [32, 32, 1]
  # It learned the faces: above the floor of predicting the mean training face for each one.
  kw = dict(data_dir=data_dir, download=False, image_size=(32, 32), channels=1,
            validation_size=10, test_size=10)
  faces = {s: sources.load_arrays(sources.get_source('lfw', s, **kw))['image']
           for s in ('train', 'test')}
  floor = metrics.mean_image_psnr(faces['train'], faces['test'])
  assert results['test_psnr'] > floor + 0.5, (results['test_psnr'], floor)


@pytest.mark.slow  # a whole study (CI's 15 minutes); `-m slow` runs it
def test_s3_study_on_tfds_lfw(tfds_dir, tmp_path):
  """configs/studies/s3_faces.py on TFDS's lfw, as its docstring and the README say."""
  data_dir, _ = tfds_dir
  workdir = tmp_path / 's3'
  flags = {'data.name': 'lfw', 'data.data_dir': data_dir, 'data.download': False,
           'data.image_size': '(32, 32)', 'data.channels': 1, 'data.validation_size': 10,
           'data.test_size': 10, 'num_epochs': 2, 'eval_every_epochs': 1,
           'checkpoint_every_epochs': 1, 'study.num_grid_images': 4, 'study.only': 'fc_ae,cae'}
  proc = subprocess.run([sys.executable, 'launch.py', '--config=configs/studies/s3_faces.py',
                         f'--workdir={workdir}', *(f'--config.{k}={v}' for k, v in flags.items())],
                        cwd=ROOT, capture_output=True, text=True, timeout=900,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = (workdir / 'study.md').read_text()
  assert 'Data: lfw, 32x32x1: 80 train / 10 validation / 10 test images' in table
  assert '| fc_ae |' in table and '| cae |' in table and 'PCA (64 floats)' in table
  member = json.loads((workdir / 'members' / 'cae' / 'results.json').read_text())
  assert member['data'] == 'lfw' and member['bottleneck_floats'] == 64
  assert np.isfinite(member['test_psnr'])
