"""The trained models that ship with the package: each loads offline by name, scores on its
bundled test images what its model.json recorded when it was exported, and codes one of them
to the golden stream's exact bytes; all of them together stay small."""

import json
import pathlib

import numpy as np
import pytest

import flax_cae
from flax_cae import api
from flax_cae.measures import metrics

ZOO = pathlib.Path(api.ZOO)
EXPECTED = pathlib.Path(__file__).resolve().parent / 'expected'
MAX_BYTES = 25 * 2**20
SHIPPED = flax_cae.shipped_models()


def test_the_package_ships_models_and_they_stay_small():
  assert {'cifar10_improved', 'cifar10_best256'} <= set(SHIPPED)
  total = sum(f.stat().st_size for f in ZOO.rglob('*') if f.is_file())
  assert total < MAX_BYTES, f'the shipped models take {total / 2**20:.1f} MB'


def _info(name):
  return json.loads((ZOO / name / 'model.json').read_text())


def _bundled(name):
  with np.load(ZOO / name / 'test_images.npz') as z:
    return z['images']


@pytest.mark.parametrize('name', SHIPPED)
def test_a_shipped_model_scores_what_it_recorded(name):
  info = _info(name)
  model = flax_cae.load(name)
  assert repr(model) == f'flax_cae.load({name!r})' and model.info == info
  images = _bundled(name)
  recorded = info['test_images']['scores']
  assert len(images) == recorded['count'] > 0
  target = images / np.float32(255)
  m = metrics.image_metrics(model.reconstruct(images), target)
  assert float(np.mean(m['psnr'])) == pytest.approx(recorded['psnr'], abs=0.01)
  assert float(np.mean(m['ssim'])) == pytest.approx(recorded['ssim'], abs=0.001)
  streams = model.compress(images)
  h, w, _ = model.image_shape
  assert 8 * sum(map(len, streams)) / len(images) / (h * w) == pytest.approx(
      recorded['codec_bpp'], abs=0.01)
  m = metrics.image_metrics(model.decompress(streams), target)
  assert float(np.mean(m['psnr'])) == pytest.approx(recorded['codec_psnr'], abs=0.01)
  # What model.json says of its weights: float16 only where the split's PSNR moved <= 0.01 dB.
  scores = info['split']['scores_by_dtype']
  if info['dtype'] == 'float16':
    assert abs(scores['float16']['psnr'] - scores['float32']['psnr']) <= 0.01
  provenance = info['note'] + info['exported']['commit'] + info['exported']['device']
  assert 'launch.py --config=configs/' in provenance and 'commit' in info['note']


def test_a_golden_stream_pins_the_codec_end_to_end():
  """A shipped model and a bundled image give a stream of known bytes: the header, the
  quantizer, the tables and the range coder together (a change to any must bump the format)."""
  model = flax_cae.load('cifar10_improved')
  stream = model.compress(_bundled('cifar10_improved')[0])[0]
  golden = (EXPECTED / 'cifar10_improved_image0.fcae').read_bytes()
  assert stream == golden
  np.testing.assert_array_equal(model.decompress(golden), model.decompress(stream))


def test_an_unknown_name_is_one_sentence():
  with pytest.raises(ValueError, match=r"'cifar11' is neither a folder .* nor a shipped model "
                     r'\(.*cifar10_improved'):
    flax_cae.load('cifar11')


@pytest.mark.parametrize('name', SHIPPED)
def test_the_readme_row_of_a_shipped_model_is_its_record(name):
  readme = (pathlib.Path(__file__).resolve().parents[1] / 'README.md').read_text()
  row = next((line for line in readme.splitlines() if line.startswith(f'| `{name}` |')), None)
  assert row is not None, f'README has no row for the shipped model {name}'
  r = _info(name)['results']
  assert f"{r['test_psnr']:.2f} dB / {r['test_ssim']:.3f}" in row, row
  assert f"{r['codec_bpp']:.3f} bpp, {r['codec_psnr']:.2f} dB" in row, row
  assert _info(name)['dtype'] in row
