"""Codes to bytes and back: quantizer, fitted tables, constriction's range coder."""

import numpy as np
import pytest

from flax_cae.codec import bitstream
from flax_cae.codec.bitstream import CodeModel
from flax_cae.runtime.errors import ConfigError

SCALES = np.array([1.0, 2.0, 0.5, 3.0])


def laplace(n, seed, shape=(4, 4)):
  return np.random.default_rng(seed).laplace(size=(n, *shape, 4)) * SCALES


@pytest.mark.parametrize('frac', [0.05, 0.5, 4.0])
def test_round_trip_is_exact_and_the_size_is_the_stream(frac):
  train = laplace(3000, 0)
  model = CodeModel.fit(train, frac * train.reshape(-1, 4).std(0))
  test = laplace(200, 1)
  test[0, 0, 0] = 1e3  # far outside the training range: clamped, still decodable
  for x in test:
    q = model.quantize(x)
    data = model.encode(q)
    assert isinstance(data, bytes)
    np.testing.assert_array_equal(model.decode(data, q.shape), q)
    # Within the coder's overhead (a few bytes) of the model's ideal code length.
    assert model.bits(q) / 8 - 1 <= len(data) <= model.bits(q) / 8 + 8
  assert model.quantize(test[0])[0, 0, 0] == model.low[0] + model.size[0] - 1


def test_finer_steps_cost_more_bytes_and_err_less():
  train, test = laplace(3000, 0), laplace(100, 1)
  sizes, errors = [], []
  for frac in (1.0, 0.25, 0.0625):
    model = CodeModel.fit(train, frac * train.reshape(-1, 4).std(0))
    sizes.append(sum(len(model.encode(model.quantize(x))) for x in test))
    errors.append(np.mean([(model.dequantize(model.quantize(x)) - x) ** 2 for x in test]))
  assert sizes[0] < sizes[1] < sizes[2] and errors[0] > errors[1] > errors[2]


def test_fitted_tables_follow_the_training_codes(tmp_path):
  train = laplace(3000, 0)
  model = CodeModel.fit(train, 0.5)
  q = np.round(train.reshape(-1, 4) / 0.5).astype(int)
  for ch in range(4):  # counts + 1 over [min - 2, max + 2]
    assert model.low[ch] == q[:, ch].min() - 2 and model.size[ch] == np.ptp(q[:, ch]) + 5
    zero = 0 - model.low[ch]
    expected = ((q[:, ch] == 0).sum() + 1) / (len(q) + model.size[ch])
    assert model.probs[ch, zero] == pytest.approx(expected)
  model.save(str(tmp_path / 'code_model.npz'))
  again = CodeModel.load(str(tmp_path / 'code_model.npz'))
  for field in ('step', 'low', 'probs', 'size'):
    np.testing.assert_array_equal(getattr(again, field), getattr(model, field))


def test_a_learned_density_codes_the_same_way():
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(9), size=3)
  model = CodeModel.from_density(probs, low=np.array([-4, -4, -2]))
  q = np.stack([rng.integers(-4, 5, 50), rng.integers(-4, 5, 50), rng.integers(-2, 7, 50)], -1)
  np.testing.assert_array_equal(model.decode(model.encode(q), q.shape), q)


def test_bad_steps_and_a_missing_model_are_one_sentence(tmp_path):
  with pytest.raises(ConfigError, match='quantizer steps must be finite and > 0'):
    CodeModel.fit(laplace(10, 0), 0.0)
  with pytest.raises(ConfigError, match='holds no code model'):
    CodeModel.load(str(tmp_path / 'none.npz'))


def test_coding_in_chunks_gives_the_same_bytes(monkeypatch):
  """Large images are coded CODER_CHUNK symbols at a time (the probability rows of one call
  stay small); the stream is the one a single call writes."""
  rng = np.random.default_rng(1)
  codes = rng.normal(size=(200, 5, 5, 3))
  model = bitstream.CodeModel.fit(codes, 0.3)
  q = model.quantize(codes[:3])
  whole = model.encode(q)
  monkeypatch.setattr(bitstream, 'CODER_CHUNK', 7)
  assert model.encode(q) == whole
  np.testing.assert_array_equal(model.decode(whole, q.shape), q)
