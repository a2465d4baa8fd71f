"""CINIC-10, prepared from its tarball (or extracted folder) of 32x32 PNG files.

CINIC-10: L. N. Darlow, E. J. Crowley, A. Antoniou, A. J. Storkey, "CINIC-10 is not
ImageNet or CIFAR-10", arXiv:1810.03505, 2018.
"""

import os
import tarfile
from pathlib import Path

from flax_cae.data.builders.archives import iter_tar_files
from flax_cae.data.builders.base import (FlaxCaeBuilder, SourceFile, _is_hidden, decode_image,
                                         ordered_map)
from flax_cae.data.builders.cifar10 import CIFAR10_CLASSES
from flax_cae.runtime.errors import DataError

CINIC10_URL = 'https://datashare.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz'
_CINIC_SPLITS = {'train': 'train', 'validation': 'valid', 'test': 'test'}  # TFDS -> CINIC folder


class Cinic10(FlaxCaeBuilder):
  """CINIC-10 from its tarball or extracted folder: 32x32x3; train, validation, test (90k each)."""

  name = 'flax_cae_cinic10'
  DISPLAY_NAME = 'cinic10'
  IMAGE_SHAPE = (32, 32, 3)
  CLASS_NAMES = CIFAR10_CLASSES
  SOURCE_FILES = (SourceFile('CINIC-10.tar.gz', CINIC10_URL),)
  DESCRIPTION = 'CINIC-10 (CIFAR-10 plus downsampled ImageNet), read from its PNG files.'
  HOMEPAGE = 'https://github.com/BayesWatch/cinic-10'

  @classmethod
  def _find_sources(cls, source_dir):
    tarball = source_dir / 'CINIC-10.tar.gz'
    if tarball.is_file():
      return {tarball.name: tarball}
    for root in (source_dir / 'CINIC-10', source_dir):  # extracted, with or without top folder
      if all((root / s).is_dir() for s in _CINIC_SPLITS.values()):
        return {tarball.name: root}
    return {}

  def _generators(self, paths):
    path = paths['CINIC-10.tar.gz']
    read = self._from_folder if path.is_dir() else self._from_tarball
    return {split: read(path, folder) for split, folder in _CINIC_SPLITS.items()}

  def _decode(self, item):
    key, file, label, name = item
    image = decode_image(file, name=name, channels=3,
                         fix='remove it or download CINIC-10 again from ' + CINIC10_URL)
    if image.shape != (32, 32, 3):
      raise DataError(f'CINIC-10 image {name!r} is {image.shape[1]}x{image.shape[0]}, not 32x32; '
                      f'download CINIC-10 again from {CINIC10_URL}.')
    return key, {'image': image, 'label': label}

  def _from_folder(self, root: Path, split: str):
    items = []
    for label, cls in enumerate(CIFAR10_CLASSES):
      folder = root / split / cls
      if not folder.is_dir():
        raise DataError(f'CINIC-10 folder {str(folder)!r} is missing; '
                        f'download CINIC-10 again from {CINIC10_URL}.')
      for name in sorted(os.listdir(folder)):
        if not _is_hidden(name) and name.lower().endswith('.png'):
          # Keys are paths relative to the split, the same for the folder and the tarball.
          items.append((f'{split}/{cls}/{name}', str(folder / name), label, str(folder / name)))
    yield from ordered_map(self._decode, items)

  def _from_tarball(self, path: Path, split: str):
    yield from ordered_map(self._decode, self._tar_members(path, split))

  def _tar_members(self, path: Path, split: str):
    """Streams (key, png bytes, label, name) of one split: one pass, no extraction to disk."""
    classes = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    try:
      for name, read in iter_tar_files(path):
        parts = name.split('/')
        # [CINIC-10/]<split>/<class>/<file>.png; '._*' are macOS metadata twins.
        if (len(parts) >= 3 and parts[-3] == split and parts[-2] in classes
            and not _is_hidden(parts[-1]) and parts[-1].lower().endswith('.png')):
          yield '/'.join(parts[-3:]), read(), classes[parts[-2]], f'{path}:{name}'
    except (OSError, EOFError, ValueError, tarfile.TarError) as e:
      raise DataError(f'Cannot read the CINIC-10 tarball {str(path)!r} ({e}); '
                      f'download it again from {CINIC10_URL}.') from e
