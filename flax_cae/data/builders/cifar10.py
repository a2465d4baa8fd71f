"""CIFAR-10, prepared from the official python-pickle tarball (or its extracted folder).

CIFAR-10: A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
technical report, University of Toronto, 2009.
"""

import pickle
import tarfile
from pathlib import Path

import numpy as np

from flax_cae.data.builders.base import FlaxCaeBuilder, SourceFile
from flax_cae.runtime.errors import DataError

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
                   'horse', 'ship', 'truck')
CIFAR10_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
_CIFAR_TRAIN = tuple(f'data_batch_{i}' for i in range(1, 6))
_CIFAR_BATCHES = (*_CIFAR_TRAIN, 'test_batch')


class Cifar10(FlaxCaeBuilder):
  """CIFAR-10 from the python tarball (or its extracted folder): 32x32x3; train 50k, test 10k."""

  name = 'flax_cae_cifar10'
  DISPLAY_NAME = 'cifar10'
  IMAGE_SHAPE = (32, 32, 3)
  CLASS_NAMES = CIFAR10_CLASSES
  SOURCE_FILES = (SourceFile('cifar-10-python.tar.gz', CIFAR10_URL),)
  DESCRIPTION = 'CIFAR-10, read from the official python-pickle tarball.'
  HOMEPAGE = 'https://www.cs.toronto.edu/~kriz/cifar.html'

  @classmethod
  def _find_sources(cls, source_dir):
    tarball = source_dir / 'cifar-10-python.tar.gz'
    if tarball.is_file():
      return {tarball.name: tarball}
    for folder in (source_dir / 'cifar-10-batches-py', source_dir):  # extracted forms
      if all((folder / b).is_file() for b in _CIFAR_BATCHES):
        return {tarball.name: folder}
    return {}

  def _generators(self, paths):
    batches = _read_cifar_batches(paths['cifar-10-python.tar.gz'])
    train = [batches[b] for b in _CIFAR_TRAIN]
    return {'train': self._examples(np.concatenate([b[0] for b in train]),
                                    np.concatenate([b[1] for b in train])),
            'test': self._examples(*batches['test_batch'])}

  def _examples(self, images, labels):
    for i in range(len(images)):
      yield i, {'image': images[i], 'label': int(labels[i])}


def _read_cifar_batches(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{batch name: (uint8 [N, 32, 32, 3], int [N])} from the tarball or the extracted folder."""
  fix = f'download cifar-10-python.tar.gz again from {CIFAR10_URL}'
  raw = {}
  try:
    if path.is_dir():
      for b in _CIFAR_BATCHES:
        raw[b] = (path / b).read_bytes()
    else:
      with tarfile.open(path, 'r|*') as tar:  # one streaming pass over the archive
        for member in tar:
          base = member.name.rsplit('/', 1)[-1]
          if member.isfile() and base in _CIFAR_BATCHES:
            raw[base] = tar.extractfile(member).read()
  except (OSError, EOFError, tarfile.TarError) as e:
    raise DataError(f'Cannot read CIFAR-10 from {str(path)!r} ({e}); {fix}.') from e
  if missing := [b for b in _CIFAR_BATCHES if b not in raw]:
    raise DataError(f'{str(path)!r} lacks the CIFAR-10 batches {", ".join(missing)}; {fix}.')
  batches = {}
  for name, blob in raw.items():
    try:
      d = pickle.loads(blob, encoding='bytes')  # the official pickles come from Python 2
      data = np.asarray(d[b'data'], dtype=np.uint8).reshape(-1, 3, 32, 32)
      labels = np.asarray(d[b'labels'], dtype=np.int64)
    except Exception as e:  # unpickling garbage raises almost anything
      raise DataError(f'CIFAR-10 batch {name!r} in {str(path)!r} is not in the official format '
                      f'({type(e).__name__}: {e}); {fix}.') from e
    if len(labels) != len(data) or labels.max(initial=0) > 9:
      raise DataError(f'CIFAR-10 batch {name!r} in {str(path)!r} has {len(data)} images but '
                      f'{len(labels)} labels (or a label above 9); {fix}.')
    batches[name] = (np.ascontiguousarray(data.transpose(0, 2, 3, 1)), labels)  # CHW -> HWC
  return batches
