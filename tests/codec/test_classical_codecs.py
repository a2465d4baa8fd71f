"""JPEG and WebP on real photos: sizes are the files' bytes, the payload is what
changes from image to image, and quality trades bytes for PSNR."""

import numpy as np
import pytest

from data_fixtures import cifar_samples
from flax_cae.codec import classical as codecs


@pytest.fixture(scope='module')
def photos():
  return cifar_samples(12)[0]  # real CIFAR-10 photos from ../shared/data


def psnr(a, b):
  mse = np.mean((a / 255.0 - b / 255.0) ** 2, axis=(1, 2, 3))
  return np.mean(10 * np.log10(1 / mse))


@pytest.mark.parametrize('codec', codecs.CODECS)
def test_sizes_are_the_files_and_quality_trades_bytes_for_psnr(photos, codec):
  points = []
  for quality in (10, 50, 90):
    decoded, sizes, payloads = codecs.run(codec, photos, quality)
    assert decoded.shape == photos.shape and decoded.dtype == np.uint8
    for image, size in zip(photos, sizes):
      assert size == len(codecs.encode(codec, image, quality))
    assert np.all(payloads < sizes) and np.all(payloads > 0)
    points.append((sizes.mean(), psnr(decoded, photos)))
  assert points[0][0] < points[1][0] < points[2][0]
  assert points[0][1] < points[1][1] < points[2][1]


@pytest.mark.parametrize('codec', codecs.CODECS)
def test_what_is_not_payload_is_the_same_for_every_image(photos, codec):
  """The 'shared header' column's claim: the bytes outside the payload do not depend on the
  image (except WebP's length fields and frame tag, which follow from the file's length)."""
  fixed = set()
  for image in photos:
    data = codecs.encode(codec, image, 50)
    if codec == 'jpeg':
      fixed.add(data[:len(data) - codecs.payload(codec, data) - 2] + data[-2:])
    else:
      fixed.add(data[:4] + data[8:16] + data[23:30])
  assert len(fixed) == 1


def test_grayscale_images_come_back_grayscale(photos):
  gray = photos[:3, ..., :1]
  for codec in codecs.CODECS:
    assert codecs.run(codec, gray, 75)[0].shape == gray.shape
