"""Classical image codecs on the same images as the learned ones: JPEG and WebP (Pillow).

Each image is written alone, as a decoder would read it from a file: `size` counts every
byte. On a 32x32 image a format's fixed parts dominate (JPEG's quantization and Huffman
tables and markers, about 600 bytes; WebP's RIFF and VP8 headers), so `payload` also counts
the bytes that change from image to image (a container could share the rest across
images of one size and quality): for JPEG the entropy-coded scan, for WebP the VP8 frame
less its fixed start code and dimensions.
"""

import io

import numpy as np
from PIL import Image

CODECS = ('jpeg', 'webp')


def _mode(images_u8: np.ndarray) -> str:
  return 'L' if images_u8.shape[-1] == 1 else 'RGB'


def _jpeg_payload(data: bytes) -> int:
  """Bytes of the entropy-coded scan: between the SOS segment's end and the EOI marker."""
  i = 2  # after SOI
  while i < len(data):
    marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], 'big')
    if marker == 0xDA:  # SOS: the scan follows its header
      return len(data) - (i + 2 + length) - 2  # less EOI
    i += 2 + length
  raise ValueError('not a baseline JPEG stream (no SOS marker)')


def _webp_payload(data: bytes) -> int:
  """A simple lossy WebP: 'RIFF' size 'WEBP' 'VP8 ' size (20 bytes), then the VP8 frame,
  whose start code and dimensions (7 bytes after its 3-byte tag) are fixed too."""
  if data[:4] != b'RIFF' or data[8:16] != b'WEBPVP8 ':
    return len(data)  # an extended file: nothing is treated as shared
  return len(data) - 20 - 7


def encode(codec: str, image_u8: np.ndarray, quality: int) -> bytes:
  """One uint8 image [H, W, C] (C = 1 or 3) -> its file's bytes."""
  img = Image.fromarray(image_u8[..., 0] if image_u8.shape[-1] == 1 else image_u8,
                        _mode(image_u8))
  buf = io.BytesIO()
  if codec == 'jpeg':  # standard Huffman tables, 4:2:0 for colour: what Pillow writes by default
    img.save(buf, 'JPEG', quality=int(quality), optimize=False)
  elif codec == 'webp':
    img.save(buf, 'WEBP', quality=int(quality), lossless=False, method=6)
  else:
    raise ValueError(f'unknown codec {codec!r}; one of {CODECS}')
  return buf.getvalue()


def decode(data: bytes, channels: int) -> np.ndarray:
  img = Image.open(io.BytesIO(data))
  img = img.convert('L' if channels == 1 else 'RGB')
  out = np.asarray(img, np.uint8)
  return out[..., None] if channels == 1 else out


def payload(codec: str, data: bytes) -> int:
  return _jpeg_payload(data) if codec == 'jpeg' else _webp_payload(data)


def run(codec: str, images_u8: np.ndarray, quality: int):
  """(decoded uint8 images [N, H, W, C], file sizes [N], payload sizes [N]) of a batch."""
  out, sizes, payloads = [], [], []
  for image in images_u8:
    data = encode(codec, image, quality)
    out.append(decode(data, image.shape[-1]))
    sizes.append(len(data))
    payloads.append(payload(codec, data))
  return np.stack(out), np.array(sizes), np.array(payloads)


def at_most(codec: str, image_u8: np.ndarray, n_bytes: int) -> tuple[int, bytes]:
  """(quality, file) of the highest quality whose file of this one image takes at most
  n_bytes (a comparison at equal size gives the classical codec no byte more); quality 1's
  file where even that is larger."""
  best = (1, encode(codec, image_u8, 1))
  for quality in range(2, 101):
    data = encode(codec, image_u8, quality)
    if len(data) <= n_bytes:  # (qualities rise: the last that fits is the highest)
      best = (quality, data)
  return best
