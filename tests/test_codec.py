"""Model.compress and Model.decompress on real runs of the three kinds of codec (a dense code
in tiles, a spatial code padded to its stride, Balle et al.'s learned density) and real
images: a stream decodes to exactly the decoder's output for the quantized code, at the
training size and at others, and every stream a model must refuse is one sentence."""

import pathlib
import shutil

import numpy as np
import pytest
from skimage import data as skimage_data

import flax_cae
from launching import tiny_run

RUNS = {
    # The tiny default: an ImprovedCAE with a dense 16-float code, so other sizes are tiled.
    'dense': {},
    # A spatial code (2 channels on the 13x13 grid of the 25x25 faces): padded to its stride.
    'spatial': {'model.name': 'res_cae', 'model.widths': '(8,16)', 'model.latent_dim': 338,
                'model.dropout_rate': 0.0},
    'balle2017': {'model.name': 'balle2017', 'model.widths': '(8,8,8)',
                  'model.dropout_rate': 0.0},
}


@pytest.fixture(scope='module')
def workdirs(tmp_path_factory):
  root = tmp_path_factory.mktemp('codec')
  return {name: tiny_run(root, name, **flags) for name, flags in RUNS.items()}


@pytest.fixture(scope='module')
def faces(workdirs):
  """The runs' first test images: real LFW faces, uint8 [4, 25, 25, 3]."""
  with np.load(pathlib.Path(workdirs['dense']) / 'test_samples.npz') as z:
    return z['images']


def photo(h, w, channels=1):
  """A crop of scikit-image's coffee photograph (real, shipped with scikit-image), grey for
  the grey LFW faces."""
  rgb = skimage_data.coffee()[100:100 + h, 200:200 + w]
  return rgb if channels == 3 else np.round(rgb.mean(-1, keepdims=True)).astype(np.uint8)


def quantized_reconstruction(model, image):
  """What a stream must decode to: the decoder's output for the quantized code of the image
  as the model sees it (padded, or cut into tiles), put back and cropped."""
  # pylint: disable=protected-access
  lay = model._layout(*image.shape[:2])
  table = model.entropy_model.table()
  t = model._at(*lay.tile)  # the network at the tile's size (decode alone cannot tell 25 from 26)
  code = model._batched(lambda b: t.encode(t.variables, b)['latent'], lay.split(image[None]),
                        model._batch(lay))
  q = table.dequantize(table.quantize(np.asarray(code, np.float32)))
  return lay.merge(model._batched(lambda b: t.decode(t.variables, {'latent': b}), q,
                                  model._batch(lay)))[0]


@pytest.mark.parametrize('kind', list(RUNS))
def test_decompress_of_compress_is_the_quantized_codes_reconstruction(workdirs, faces, kind):
  model = flax_cae.load(workdirs[kind])
  streams = model.compress(faces)
  assert len(streams) == len(faces) and all(isinstance(s, bytes) for s in streams)
  back = model.decompress(streams)
  assert back.shape == faces.shape and back.dtype == np.float32
  for image, decoded in zip(faces, back):
    np.testing.assert_array_equal(decoded, quantized_reconstruction(model, image))
  np.testing.assert_array_equal(model.decompress(streams[1]), back[1])  # one stream, one image
  # Each stream is its own: the header and the image's code, no more.
  assert all(s[:3] == b'FC\x01' for s in streams)
  assert {s[3:7] for s in streams} == {model.fingerprint}


@pytest.mark.parametrize('kind,how', [('dense', 'tiles'), ('spatial', 'padded'),
                                      ('balle2017', 'padded')])
def test_any_size_compresses_and_decodes_exactly(workdirs, kind, how):
  model = flax_cae.load(workdirs[kind])
  assert (model._stride is None) == (how == 'tiles')  # pylint: disable=protected-access
  assert ('fully convolutional' in model.describe()) == (how == 'padded')
  images = [photo(61, 90), photo(25, 25), photo(12, 17)]
  streams = model.compress(images)
  back = model.decompress(streams)
  assert isinstance(back, list) and [b.shape for b in back] == [i.shape for i in images]
  for image, decoded in zip(images, back):
    np.testing.assert_array_equal(decoded, quantized_reconstruction(model, image))
  # The decoded photo resembles it (a 1-epoch model: far from good, far from noise).
  err = np.abs(back[0] - images[0] / 255.0).mean()
  assert err < np.abs(images[0] / 255.0 - images[0].mean() / 255.0).mean() * 1.5


def test_each_step_trades_bytes_for_quality(workdirs, faces):
  model = flax_cae.load(workdirs['dense'])
  sizes = [sum(map(len, model.compress(faces, step=s))) for s in (0.5, 0.25, 0.125)]
  assert sizes[0] < sizes[1] < sizes[2]
  streams = model.compress(faces, step=0.5)
  assert not np.array_equal(model.decompress(streams), model.decompress(model.compress(faces)))
  with pytest.raises(ValueError, match=r"quantizer step 0.3 is not one of this model's"):
    model.compress(faces, step=0.3)


def test_balle_codes_with_its_learned_density(workdirs):
  model = flax_cae.load(workdirs['balle2017'])
  assert model.entropy_model.learned and model.entropy_model.steps == (1.0,)
  assert 'compresses with its learned density' in model.describe()
  r = model.results
  assert r['codec']['learned_density'] and r['codec']['default_step'] == 1.0
  # The table is the density renormalized over the symbols the training codes reach, so the
  # coded streams take at most the density's own estimate of the rate (test bpp), give or
  # take the coder's last word.
  h, w, _ = model.image_shape
  assert 0 < r['codec_bpp_payload'] <= r['test_bpp'] + 8 * 4 / (h * w)


def _flip(data: bytes, at: int) -> bytes:
  return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def test_streams_a_model_cannot_decode_are_one_sentence(workdirs, faces, tmp_path):
  dense, spatial = flax_cae.load(workdirs['dense']), flax_cae.load(workdirs['spatial'])
  stream = dense.compress(faces[0])[0]
  for bad, message in (
      (spatial.compress(faces[0])[0], 'was written by another model (fingerprint'),
      (stream[:-3], 'is truncated or corrupted'),
      (_flip(stream, len(stream) - 1), 'is truncated or corrupted'),
      (b'\x89PNG\r\n' + stream[6:], 'is not a flax-cae stream'),
  ):
    with pytest.raises(ValueError) as e:
      dense.decompress([stream, bad], names=['a.fcae', 'b.fcae'])
    assert str(e.value).startswith('b.fcae ') and message in str(e.value), str(e.value)
    assert '\n' not in str(e.value)
  # A copy of the run without its entropy model cannot code, and says how to get one.
  copy = tmp_path / 'copy'
  shutil.copytree(workdirs['dense'], copy)
  (copy / 'entropy_model.npz').unlink()
  bare = flax_cae.load(str(copy))
  with pytest.raises(ValueError, match=r'has no entropy model .*python -m flax_cae.export '
                     r'--workdir=THAT_WORKDIR --out=DIR fits one'):
    bare.compress(faces)
  assert bare.reconstruct(faces).shape == faces.shape  # the rest still works


def test_wrong_arguments_to_decompress_and_lists_of_sizes(workdirs, faces):
  model = flax_cae.load(workdirs['dense'])
  streams = model.compress(faces[:2])
  with pytest.raises(ValueError, match='decompress takes bytes .* or a list of bytes'):
    model.decompress('a.fcae')
  with pytest.raises(ValueError, match='1 names for 2 streams'):
    model.decompress(streams, names=['a.fcae'])
  images = [photo(30, 40), photo(25, 25)]
  out = model.reconstruct(images)
  assert isinstance(out, list) and [o.shape for o in out] == [i.shape for i in images]
  np.testing.assert_array_equal(out[1], model.reconstruct(images[1]))


def test_encode_refuses_a_size_decode_would_take_for_the_training_size(workdirs):
  # The spatial run's 25x25 faces give a 13x13 code grid; a 26x26 image gives one too.
  model = flax_cae.load(workdirs['spatial'])
  with pytest.raises(ValueError, match=r'images of 26x26 give codes of the same grid as the '
                     r'training size 25x25'):
    model.encode(photo(26, 26))
  image = photo(28, 30)  # another grid (14x15): decodes at its own size
  assert model.decode(model.encode(image)).shape == image.shape
  assert model.compress(photo(26, 26))  # compress knows the size: it takes any


def test_an_entropy_model_fitted_for_other_weights_is_not_used(workdirs, faces, tmp_path, caplog):
  # A run resumed for more epochs trains on: its old entropy model belongs to older weights.
  model = flax_cae.load(workdirs['dense'])
  assert model.entropy_model.weights_step == model.results['best_step']
  copy = tmp_path / 'resumed'
  shutil.copytree(workdirs['dense'], copy)
  stale = model.entropy_model
  stale.weights_step = model.results['best_step'] - 1
  stale.save(str(copy / 'entropy_model.npz'))
  with caplog.at_level('WARNING'):
    reread = flax_cae.load(str(copy))
  assert reread.entropy_model is None
  assert f"was fitted for the weights of step {stale.weights_step}, not those" in caplog.text
  with pytest.raises(ValueError, match='has no entropy model'):
    reread.compress(faces)
