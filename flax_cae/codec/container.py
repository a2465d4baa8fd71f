"""The .fcae stream: one compressed image, with a header that lets a decoder refuse what it
cannot decode instead of returning a wrong picture.

  offset  size  field
  0       2     magic b'FC'
  2       1     format version (FORMAT_VERSION)
  3       4     fingerprint of the model that wrote it (`fingerprint`)
  7       2     image height, uint16 big-endian
  9       2     image width, uint16 big-endian
  11      1     image channels
  12      4     quantizer step, float32 big-endian (in each code channel's standard deviations)
  16      4     CRC-32 of every other byte of the stream (header and payload), big-endian
  20      ...   payload: the range coder's words (bitstream.CodeModel.encode)

Twenty bytes in all: a stream from another model, of another format version, truncated or
corrupted is one ValueError sentence.
"""

import dataclasses
import hashlib
import struct
import zlib

import numpy as np

MAGIC = b'FC'
FORMAT_VERSION = 1
_HEADER = struct.Struct('>2sB4sHHBf')  # everything before the checksum
_CRC = struct.Struct('>I')
HEADER_BYTES = _HEADER.size + _CRC.size
FINGERPRINT_BYTES = 4


def fingerprint(*arrays) -> bytes:
  """FINGERPRINT_BYTES of SHA-256 over the arrays' shapes, dtypes and bytes (in order): the
  decoder's parameters and the entropy model's tables, so a stream names what wrote it."""
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f'{a.dtype.str}{a.shape}'.encode())
    h.update(a.tobytes())
  return h.digest()[:FINGERPRINT_BYTES]


@dataclasses.dataclass(frozen=True)
class Stream:
  fingerprint: bytes
  image_shape: tuple[int, int, int]
  step: float
  payload: bytes


def write(stream: Stream) -> bytes:
  """The stream's bytes: header, checksum, payload."""
  h, w, c = stream.image_shape
  if len(stream.fingerprint) != FINGERPRINT_BYTES:
    raise ValueError(f'a fingerprint has {FINGERPRINT_BYTES} bytes, got '
                     f'{len(stream.fingerprint)}.')
  if not (0 < h < 2**16 and 0 < w < 2**16 and 0 < c < 2**8):
    raise ValueError(f'a stream holds images of 1..65535 x 1..65535 pixels and 1..255 '
                     f'channels, got {h}x{w}x{c}.')
  head = _HEADER.pack(MAGIC, FORMAT_VERSION, stream.fingerprint, h, w, c, stream.step)
  crc = zlib.crc32(stream.payload, zlib.crc32(head))
  return head + _CRC.pack(crc) + stream.payload


def read(data: bytes, expected_fingerprint: bytes | None = None, name: str = 'the stream'
         ) -> Stream:
  """The stream in `data`, checked: its magic, version and checksum, and (given one) that the
  model that wrote it is the one reading it. `name` says which file, in the sentence."""
  data = bytes(data)
  if len(data) < HEADER_BYTES or data[:2] != MAGIC:
    raise ValueError(f'{name} is not a flax-cae stream (it does not start with the '
                     f'{HEADER_BYTES}-byte .fcae header); give a file that flax-cae compressed.')
  magic, version, fp, h, w, c, step = _HEADER.unpack_from(data)
  del magic
  if version != FORMAT_VERSION:
    raise ValueError(f'{name} is in .fcae format version {version}; this flax-cae reads '
                     f'version {FORMAT_VERSION}.')
  (crc,) = _CRC.unpack_from(data, _HEADER.size)
  payload = data[HEADER_BYTES:]
  if zlib.crc32(payload, zlib.crc32(data[:_HEADER.size])) != crc:
    raise ValueError(f'{name} is truncated or corrupted (its checksum does not match its '
                     f'{len(data)} bytes); compress the image again.')
  if expected_fingerprint is not None and fp != expected_fingerprint:
    raise ValueError(f'{name} was written by another model (fingerprint {fp.hex()}, this '
                     f"model's is {expected_fingerprint.hex()}); decompress it with the model "
                     'that compressed it.')
  return Stream(fp, (h, w, c), float(step), payload)
