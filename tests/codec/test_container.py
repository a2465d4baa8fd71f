"""The .fcae stream format: pinned by a golden file, and every stream a decoder must refuse
(another model's, another version's, truncated, corrupted, not a stream) is one sentence."""

import pathlib

import numpy as np
import pytest

from flax_cae.codec import bitstream, container

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / 'expected' / 'stream_v1.fcae'


def fixed_stream():
  """A fixed entropy model and code: 4 channels, 7 symbols each, a 4x4x4 code."""
  k = np.arange(7)
  probs = np.stack([np.exp(-np.abs(k - 3) / (1.0 + c)) for c in range(4)])
  model = bitstream.CodeModel.from_density(probs, low=np.full(4, -3), step=0.5)
  symbols = (np.arange(64).reshape(4, 4, 4) * 7 % 5 - 2).astype(np.int32)
  stream = container.Stream(container.fingerprint(model.probs, model.low), (32, 32, 3), 0.5,
                            model.encode(symbols))
  return model, symbols, stream


def test_the_format_is_pinned_by_a_golden_stream():
  model, symbols, stream = fixed_stream()
  data = container.write(stream)
  assert data == GOLDEN.read_bytes()  # a change of format must bump FORMAT_VERSION
  assert data[:2] == b'FC' and data[2] == container.FORMAT_VERSION
  back = container.read(data, stream.fingerprint)
  assert back == stream
  np.testing.assert_array_equal(model.decode(back.payload, symbols.shape), symbols)
  assert len(data) == container.HEADER_BYTES + len(stream.payload) == 20 + len(stream.payload)


def _flip(data: bytes, at: int) -> bytes:
  return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]


@pytest.mark.parametrize('damage,message', [
    (lambda d: d[:-1], 'is truncated or corrupted'),
    (lambda d: d[:container.HEADER_BYTES], 'is truncated or corrupted'),
    (lambda d: _flip(d, len(d) - 2), 'is truncated or corrupted'),
    (lambda d: _flip(d, 8), 'is truncated or corrupted'),  # the image height
    (lambda d: d[:2] + bytes([2]) + d[3:], 'is in .fcae format version 2; this flax-cae reads '
     'version 1'),
    (lambda d: b'\x89PNG\r\n\x1a\n' + d[8:], 'is not a flax-cae stream'),
    (lambda d: d[:5], 'is not a flax-cae stream'),
])
def test_a_damaged_stream_is_one_sentence(damage, message):
  _, _, stream = fixed_stream()
  with pytest.raises(ValueError) as e:
    container.read(damage(container.write(stream)), stream.fingerprint, name='a.fcae')
  assert str(e.value).startswith('a.fcae ') and message in str(e.value), str(e.value)


def test_a_stream_of_another_model_is_refused():
  model, _, stream = fixed_stream()
  other = container.fingerprint(model.probs * 0.5, model.low)
  assert other != stream.fingerprint
  with pytest.raises(ValueError, match='was written by another model'):
    container.read(container.write(stream), other)


def test_the_fingerprint_sees_values_shapes_and_dtypes():
  a = np.arange(6, dtype=np.float32)
  prints = {container.fingerprint(x) for x in (a, a.reshape(2, 3), a.astype(np.float64),
                                                 a + 1e-6)}
  assert len(prints) == 4 and container.fingerprint(a) == container.fingerprint(a.copy())
