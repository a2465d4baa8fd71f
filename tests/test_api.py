"""The public API: `flax_cae.load` on a real run's workdir, its outputs against the evaluator's,
and every bad input as one ValueError sentence."""

import pathlib
import tomllib

import numpy as np
import pytest

import flax_cae
from flax_cae.evaluation import trained as trained_lib
from launching import ROOT, tiny_run


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A finished run of the tiny default (an ImprovedCAE on scikit-image's LFW subset)."""
  return tiny_run(tmp_path_factory.mktemp('api'))


@pytest.fixture(scope='module')
def model(workdir):
  return flax_cae.load(workdir)


@pytest.fixture(scope='module')
def images(workdir):
  """The run's own first test images (real faces), uint8 [N, H, W, C]."""
  with np.load(pathlib.Path(workdir) / 'test_samples.npz') as z:
    return z['images']


def test_the_package_says_its_version_and_api():
  project = tomllib.loads((pathlib.Path(ROOT) / 'pyproject.toml').read_text())['project']
  assert flax_cae.__version__ == project['version']
  assert {'load', 'Model', 'shipped_models'} <= set(flax_cae.__all__)
  with pytest.raises(AttributeError, match='no attribute'):
    flax_cae.nothing_here  # pylint: disable=pointless-statement


def test_load_describes_the_run(model, workdir):
  h, w, c = model.image_shape
  assert model.config.model.name == 'improved_cae' and model.task == 'reconstruction'
  assert model.bottleneck['floats'] == 16
  assert model.results['best_step'] == trained_lib.load_trained(workdir).results['best_step']
  text = model.describe()
  assert f'takes {h}x{w} images with {c} channel(s)' in text and 'bottleneck: 16 floats' in text
  assert f'larger or smaller ones are cut into {h}x{w} tiles' in text
  assert 'compresses with per-channel tables' in text and 'test: psnr' in text
  assert repr(model) == f'flax_cae.load({workdir!r})'


def test_the_run_fitted_and_measured_its_codec(model, workdir):
  r = model.results
  assert (pathlib.Path(workdir) / 'entropy_model.npz').is_file()
  assert r['codec']['default_step'] == 0.125 and [p['step'] for p in r['codec']['points']] == [
      0.5, 0.25, 0.125]
  bpps = [p['bpp'] for p in r['codec']['points']]
  assert bpps == sorted(bpps) and r['codec_bpp'] == bpps[-1]
  h, w, _ = model.image_shape
  assert r['codec_bpp'] - r['codec_bpp_payload'] == pytest.approx(8 * 20 / (h * w))
  # Quantizing can only cost PSNR here, never add it by much.
  assert r['codec_psnr'] < r['test_psnr'] + 0.05


def test_any_size_is_tiled_into_the_training_size(model, images):
  h, w, _ = model.image_shape
  big = np.concatenate([np.concatenate([images[0], images[1]], 1),
                        np.concatenate([images[2], images[3]], 1)], 0)[:2 * h - 3, :2 * w - 5]
  out = model.reconstruct(big)
  assert out.shape == big.shape
  tiles = model.reconstruct(images[:4])
  np.testing.assert_allclose(out[:h, :w], tiles[0], atol=1e-6)  # whole tiles: the tile's own
  padded = np.pad(images[2][:h - 3], ((0, 3), (0, 0), (0, 0)), mode='reflect')
  np.testing.assert_allclose(out[h:, :w], model.reconstruct(padded)[:h - 3], atol=1e-6)
  small = model.reconstruct(images[0][:7, :9])  # padded by reflection to one tile
  assert small.shape == (7, 9, images.shape[-1])


def test_reconstruct_is_the_evaluators_output_for_uint8_and_float_images(model, workdir, images):
  reference = np.asarray(trained_lib.load_trained(workdir).reconstruct(images))
  out = model.reconstruct(images)
  assert out.shape == images.shape and out.dtype == np.float32
  np.testing.assert_array_equal(out, reference)
  np.testing.assert_array_equal(model.reconstruct(images / 255.0), reference)
  np.testing.assert_array_equal(model.reconstruct(images[0]), reference[0])  # one image


def test_many_images_run_in_batches(model, images):
  many = np.concatenate([images] * (600 // len(images) + 1))[:600]
  out = model.reconstruct(many)
  assert out.shape == many.shape
  np.testing.assert_allclose(out[-len(images):][:4], model.reconstruct(many[-len(images):])[:4],
                             atol=1e-6)


def test_decode_of_encode_is_reconstruct(model, images):
  codes = model.encode(images)
  assert set(codes) == {'latent'} and codes['latent'].shape == (len(images), 16)
  np.testing.assert_allclose(model.decode(codes), model.reconstruct(images), atol=1e-5)
  one = model.encode(images[0])
  assert one['latent'].shape == (16,)
  assert model.decode(one).shape == images.shape[1:]


@pytest.mark.parametrize('make,message', [
    (lambda x: x / 255.0 * 2, 'float images must lie in [0, 1], got values from'),
    (lambda x: np.full(x.shape, np.nan, np.float32), 'float images hold NaN or infinite values'),
    (lambda x: x.astype(np.int32), 'images must be uint8 or floats in [0, 1], got dtype int32'),
    (lambda x: np.repeat(x[..., :1], 2, axis=-1), 'images have 2 channel(s)'),
    (lambda x: x[0, :, :, 0], 'images must be [N, H, W, C] or [H, W, C], got an array of shape'),
])
def test_bad_images_are_one_sentence(model, images, make, message):
  with pytest.raises(ValueError) as e:
    model.reconstruct(make(images))
  assert message in str(e.value) and '\n' not in str(e.value), str(e.value)


def test_bad_codes_and_wrong_uses_are_one_sentence(model, images):
  codes = model.encode(images)
  for bad, message in (({'z': codes['latent']}, "codes must be a dict with the parts ['latent']"),
                       (codes['latent'], 'codes must be a dict'),
                       ({'latent': codes['latent'][:, :8]}, "codes['latent'] has shape (8,)")):
    with pytest.raises(ValueError, match=None) as e:
      model.decode(bad)
    assert message in str(e.value), str(e.value)
  with pytest.raises(ValueError, match='not a classifier; predict needs a classifier'):
    model.predict(images)
  with pytest.raises(ValueError, match=r"this model's network takes .* \(its training size\); "
                     'resize them, or use reconstruct, compress and decompress, which tile'):
    model.encode(images[:, :-2])
