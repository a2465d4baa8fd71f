"""MNIST and Colored MNIST, prepared from MNIST's four official IDX files.

MNIST: Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied
to document recognition", Proceedings of the IEEE 86(11), 1998.
"""

import gzip
from pathlib import Path

import numpy as np

from flax_cae.data.builders.base import FlaxCaeBuilder, SourceFile
from flax_cae.runtime.errors import DataError

MNIST_URL = 'https://storage.googleapis.com/cvdf-datasets/mnist/'
_MNIST_FILES = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
                't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')


def read_idx(path: Path, ndim: int, fix: str) -> np.ndarray:
  """Reads an IDX file of unsigned bytes (gzipped or not) -> uint8 array with `ndim` dims."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
    if data[:2] == b'\x1f\x8b':  # gzipped, whatever the name (TFDS renames downloads)
      data = gzip.decompress(data)
    if len(data) < 4 or data[:3] != b'\x00\x00\x08' or data[3] != ndim:
      raise ValueError(f'header is not that of a {ndim}-D unsigned-byte IDX file')
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    if len(data) != 4 + 4 * ndim + int(np.prod(dims)):
      raise ValueError(f'{len(data)} bytes do not match the header\'s shape {dims}')
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)
  except (OSError, EOFError, ValueError) as e:  # BadGzipFile is an OSError
    raise DataError(f'{str(path)!r} is not a valid MNIST IDX file ({e}); {fix}.') from e


class Mnist(FlaxCaeBuilder):
  """MNIST from the official IDX files: 28x28x1 digits; splits train (60k), test (10k)."""

  name = 'flax_cae_mnist'
  DISPLAY_NAME = 'mnist'
  IMAGE_SHAPE = (28, 28, 1)
  CLASS_NAMES = tuple(str(i) for i in range(10))
  SOURCE_FILES = tuple(SourceFile(f, MNIST_URL + f) for f in _MNIST_FILES)
  DESCRIPTION = 'MNIST handwritten digits, read from the official IDX files.'
  HOMEPAGE = 'https://yann.lecun.com/exdb/mnist/'

  @classmethod
  def _find_sources(cls, source_dir):
    found = {}
    for name in _MNIST_FILES:  # also accept the files gunzipped (as torchvision keeps them)
      for candidate in (name, name[:-len('.gz')]):
        if (source_dir / candidate).is_file():
          found[name] = source_dir / candidate
          break
    return found

  def _generators(self, paths):
    return {'train': self._examples(paths, 'train'), 'test': self._examples(paths, 't10k')}

  def _examples(self, paths, prefix):
    fix = f'download it again from {MNIST_URL}'
    images = read_idx(paths[f'{prefix}-images-idx3-ubyte.gz'], 3, fix)
    labels = read_idx(paths[f'{prefix}-labels-idx1-ubyte.gz'], 1, fix)
    if len(images) != len(labels) or images.shape[1:] != (28, 28) or labels.max(initial=0) > 9:
      raise DataError(f'MNIST {prefix} files hold {images.shape} images and {labels.shape} '
                      'labels, not matching 28x28 digits labelled 0-9; download them again '
                      f'from {MNIST_URL}.')
    for i in range(len(images)):
      yield i, {'image': images[i, :, :, None], 'label': int(labels[i])}


class ColoredMnist(Mnist):
  """Colored MNIST (S4): each MNIST digit tinted by its own colour, 28x28x3, labels kept.

  The rule: pixel = digit intensity x colour, on black; the colour of digit i of a split is
  row i of numpy's default_rng((COLOR_SEED, split)).uniform(0.25, 1.0, (n, 3)) (split 0:
  train, 1: test), so every preparation gives the same images and no digit is too dark
  to see. Prepared from the same four IDX files as `mnist`.
  """

  name = 'flax_cae_colored_mnist'
  DISPLAY_NAME = 'colored_mnist'
  IMAGE_SHAPE = (28, 28, 3)
  DESCRIPTION = 'MNIST digits, each tinted by a seeded random RGB colour (S4).'
  COLOR_SEED = 4

  def _examples(self, paths, prefix):
    digits = list(super()._examples(paths, prefix))
    rng = np.random.default_rng((self.COLOR_SEED, 0 if prefix == 'train' else 1))
    colours = rng.uniform(0.25, 1.0, (len(digits), 3))
    for (i, ex), colour in zip(digits, colours):
      image = np.round(ex['image'].astype(np.float64) * colour).astype(np.uint8)
      yield i, {'image': image, 'label': ex['label']}
