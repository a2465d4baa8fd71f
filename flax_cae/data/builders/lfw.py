"""Labeled Faces in the Wild: the full data set cropped to the face, and scikit-image's subset.

LFW: G. B. Huang, M. Ramesh, T. Berg, E. Learned-Miller, "Labeled Faces in the Wild:
A Database for Studying Face Recognition in Unconstrained Environments", technical
report 07-49, University of Massachusetts, Amherst, 2007.
"""

import dataclasses
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from flax_cae.data.builders.archives import iter_tar_files
from flax_cae.data.builders.base import (FlaxCaeBuilder, SourceFile, _features,
                                         _LocalDatasetInfo, _prepared_class_names, decode_image,
                                         ordered_map)
from flax_cae.runtime.errors import DataError


# --------------------------------------------------------------------------------------- LFW subset

class LfwSubset(FlaxCaeBuilder):
  """scikit-image's bundled LFW subset: 200 grayscale 25x25 images, 100 faces (label 1)."""

  name = 'flax_cae_lfw_subset'
  DISPLAY_NAME = 'lfw_subset'
  IMAGE_SHAPE = (25, 25, 1)
  CLASS_NAMES = ('non_face', 'face')
  DESCRIPTION = 'skimage.data.lfw_subset(): 100 LFW faces then 100 non-face crops.'
  HOMEPAGE = 'https://scikit-image.org/docs/stable/api/skimage.data.html#skimage.data.lfw_subset'

  def _generators(self, paths):
    return {'train': self._examples()}

  def _examples(self):
    import skimage.data  # pylint: disable=g-import-not-at-top  (slow import; only needed here)
    x = skimage.data.lfw_subset()  # float [200, 25, 25] in [0, 1]
    images = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)[..., None]
    for i in range(len(images)):
      yield i, {'image': images[i], 'label': int(i < 100)}  # the first 100 are faces


# ---------------------------------------------------------------------------------------------- LFW

LFW_URL = 'https://ndownloader.figshare.com/files/5976018'  # lfw.tgz; TFDS and scikit-learn's URL
# The face in LFW's 250x250 images: a 128x128 square centred on the box scikit-learn's
# fetch_lfw_people crops by default (rows 70-195, columns 78-172), so chin to brow, little
# background. As fractions (left, top, right, bottom) so any image size crops alike.
LFW_FACE_BOX = (61 / 250, 69 / 250, 189 / 250, 197 / 250)


@dataclasses.dataclass(eq=False)
class LfwConfig(tfds.core.BuilderConfig):
  """LFW faces at one size: image_size (H, W), channels (1 or 3)."""
  image_size: tuple[int, int] = (64, 64)
  channels: int = 1


def lfw_config(image_size: tuple[int, int], channels: int) -> LfwConfig:
  h, w = image_size
  return LfwConfig(name=f'{h}x{w}x{channels}', image_size=(int(h), int(w)), channels=int(channels),
                   description=f'LFW faces cropped to the face and resized to {h}x{w}x{channels}.')


def tfds_lfw_dir(*data_dirs) -> Path | None:
  """The newest version folder of TFDS's own `lfw` prepared in one of data_dirs, or None."""
  for d in data_dirs:
    if d:
      found = sorted(Path(d).expanduser().glob('lfw/*/dataset_info.json'),
                     key=lambda p: tuple(int(x) for x in re.findall(r'\d+', p.parent.name)))
      if found:
        return found[-1].parent
  return None


class Lfw(FlaxCaeBuilder):
  """Labeled Faces in the Wild (13,233 photos of 5,749 people), cropped to the face.

  Read from TFDS's own `lfw` where it is prepared (in data_dir, or in source_dir as a
  TFDS data folder; array_record, read with tfds.data_source, no TensorFlow), else from
  the official lfw.tgz (or its extracted lfw/ folder) in source_dir, else downloaded.
  Labels are people, by sorted name. Construct with `config=lfw_config((H, W), channels)`.
  """

  name = 'flax_cae_lfw'
  DISPLAY_NAME = 'lfw'
  SOURCE_FILES = (SourceFile('lfw.tgz', LFW_URL),)
  DESCRIPTION = 'LFW faces, cropped to the face and resized.'
  HOMEPAGE = 'http://vis-www.cs.umass.edu/lfw/'

  def __init__(self, *, config: LfwConfig, **kwargs):
    super().__init__(config=config, **kwargs)

  def _info(self):
    cfg = self.builder_config
    return _LocalDatasetInfo(  # names None until prepared: set once the source is read
        builder=self, description=cfg.description,
        features=_features((*cfg.image_size, cfg.channels), _prepared_class_names(self)),
        supervised_keys=('image', 'label'), homepage=self.HOMEPAGE)

  def tfds_source(self) -> Path | None:
    """TFDS's prepared `lfw` this builder reads, if there is one."""
    return tfds_lfw_dir(self.source_dir, self.data_dir_root)

  def needs_files(self) -> bool:
    return self.tfds_source() is None

  @classmethod
  def _find_sources(cls, source_dir):
    tarball = source_dir / 'lfw.tgz'
    if tarball.is_file():
      return {tarball.name: tarball}
    for folder in (source_dir / 'lfw', source_dir):  # the extracted form: lfw/<person>/<jpg>
      if folder.is_dir() and next(folder.glob('*/*.jpg'), None) is not None:
        return {tarball.name: folder}
    return {}

  def _source_paths(self, dl_manager):
    return {} if self.tfds_source() else super()._source_paths(dl_manager)

  def _generators(self, paths):
    tfds_lfw = self.tfds_source()
    if tfds_lfw:
      items = self._from_tfds(tfds_lfw)
    else:
      items = self._from_files(Path(paths['lfw.tgz']))
    people = sorted({person for person, _, _ in items})
    self.info.features['label'].names = people
    index = {p: i for i, p in enumerate(people)}
    return {'train': ordered_map(lambda item: self._decode(item, index), items)}

  def _decode(self, item, index):
    person, key, file = item
    cfg = self.builder_config
    image = decode_image(file, name=key, channels=cfg.channels, size=cfg.image_size,
                         crop=LFW_FACE_BOX, fix='prepare LFW again from a fresh lfw.tgz')
    return key, {'image': image, 'label': index[person]}

  def _from_tfds(self, folder: Path) -> list[tuple[str, str, bytes]]:
    """[(person, key, JPEG bytes)] from TFDS's prepared lfw (its stored order)."""
    fix = ('flax-cae reads it as array_record without TensorFlow: prepare it with `tfds build '
           'lfw --file_format=array_record`, or put lfw.tgz in a folder and set '
           '--config.data.source_dir=DIR')
    try:
      builder = tfds.builder_from_directory(folder)
      stored = builder.info.file_format
      if stored is not None and stored.value != 'array_record':
        raise DataError(f"TFDS's lfw in {str(folder)!r} is stored as {stored.value}; {fix}.")
      source = builder.as_data_source(split='train')
      items = []
      for lo in range(0, len(source), 512):
        for ex in _raw_examples(source, range(lo, min(lo + 512, len(source)))):
          person = ex['label']
          items.append((person, f'{person}/{len(items):05d}', ex['image']))
      return items
    except DataError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (any read problem)
      reason = ' '.join(str(e).split('\n')[0].split())[:200]
      raise DataError(f"Cannot read TFDS's lfw prepared in {str(folder)!r} ({type(e).__name__}: "
                      f'{reason}); {fix}.') from e

  def _from_files(self, path: Path) -> list[tuple[str, str, Any]]:
    """[(person, key, path or bytes)] from lfw.tgz or its extracted folder."""
    fix = f'download lfw.tgz again from {LFW_URL}'
    items = []
    try:
      if path.is_dir():
        for f in sorted(path.glob('*/*.jpg')):
          items.append((f.parent.name, f'{f.parent.name}/{f.name}', f))
      else:  # ~180 MB: the JPEGs (~13k x 15 kB) are kept in memory while they are decoded
        for member, read in iter_tar_files(path):
          parts = member.split('/')
          if len(parts) >= 2 and parts[-1].endswith('.jpg'):
            items.append((parts[-2], f'{parts[-2]}/{parts[-1]}', read()))
    except (OSError, EOFError, tarfile.TarError) as e:
      raise DataError(f'Cannot read LFW from {str(path)!r} ({e}); {fix}.') from e
    if not items:
      raise DataError(f'{str(path)!r} holds no LFW images (lfw/<person>/<person>_NNNN.jpg); {fix}.')
    return items


def _raw_examples(source, indices) -> Iterator[dict[str, Any]]:
  """TFDS lfw examples {'image': encoded JPEG bytes, 'label': person} without decoding them."""
  from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top
  for record in source.data_source.__getitems__(list(indices)):
    feature = tf_example_pb2.Example.FromString(record).features.feature
    yield {'image': feature['image'].bytes_list.value[0],
           'label': feature['label'].bytes_list.value[0].decode('utf-8')}
