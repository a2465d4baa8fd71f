"""Any folder of images laid out as ROOT/<class>/**/<image>, resized at preparation time."""

import dataclasses
import hashlib
import logging
import os
import re
from pathlib import Path

import tensorflow_datasets as tfds

from flax_cae.data.builders.base import (FlaxCaeBuilder, _features, _is_hidden,
                                         _LocalDatasetInfo, _prepared_class_names, decode_image,
                                         ordered_map)
from flax_cae.data.builders.lfw import LfwConfig
from flax_cae.runtime.errors import DataError


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
  """One image folder at one size: root (absolute path), image_size (H, W), channels (1 or 3)."""
  root: str = ''
  image_size: tuple[int, int] = (0, 0)
  channels: int = 3


def image_folder_config(root: str | os.PathLike, image_size: tuple[int, int],
                        channels: int) -> ImageFolderConfig:
  """A config named <basename>_<hash of the absolute path>_<H>x<W>x<C>: one per folder and size."""
  root = os.path.realpath(os.path.expanduser(os.fspath(root)))
  base = re.sub(r'[^a-z0-9]+', '_', os.path.basename(root).lower()).strip('_')[:40] or 'root'
  digest = hashlib.sha1(root.encode()).hexdigest()[:8]
  h, w = image_size
  return ImageFolderConfig(
      name=f'{base}_{digest}_{h}x{w}x{channels}', root=root,
      image_size=(int(h), int(w)), channels=int(channels),
      description=f'Images under {root}, resized to {h}x{w}x{channels}.')


def class_folders(root: Path) -> list[str]:
  """Sorted names of the class folders under root (hidden ones skipped)."""
  if not root.is_dir():
    raise DataError(f'Image folder {str(root)!r} does not exist; '
                    'point --config.data.source_dir at a folder laid out as ROOT/<class>/<images>.')
  names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not _is_hidden(e.name))
  if not names:
    raise DataError(f'Image folder {str(root)!r} has no class sub-folders; '
                    'lay it out as ROOT/<class>/<images> (one folder per class).')
  return names


# Files an image folder is made of, by extension (any case); others (a README.txt, a
# Thumbs.db) are skipped with a warning.
IMAGE_EXTENSIONS = ('.bmp', '.gif', '.jpeg', '.jpg', '.pbm', '.pgm', '.png', '.ppm', '.tif',
                    '.tiff', '.webp')


def image_files(root: Path) -> tuple[list[tuple[str, str, int]], list[str]]:
  """([(key, path, label)] of the images under root's class folders, in a deterministic
  order; [relative paths of the other files, skipped]). Hidden files and folders are ignored."""
  items, skipped = [], []
  for label, cls in enumerate(class_folders(root)):
    for dirpath, dirnames, filenames in os.walk(root / cls, followlinks=True):
      dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
      for f in sorted(filenames):
        if not _is_hidden(f):
          path = Path(dirpath) / f
          key = path.relative_to(root).as_posix()
          if path.suffix.lower() in IMAGE_EXTENSIONS:
            items.append((key, str(path), label))
          else:
            skipped.append(key)
  return items, skipped


class _HideCustomConfigWarning(logging.Filter):
  """Drops TFDS's 'Using custom data configuration' warning for image-folder and LFW configs.

  Every ImageFolderConfig is made on the fly (one per folder and size), which is
  how the builder is meant to be used, so the warning would only be noise.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    return not (isinstance(record.args, tuple) and record.args
                and isinstance(record.args[0], (ImageFolderConfig, LfwConfig)))


logging.getLogger('absl').addFilter(_HideCustomConfigWarning())


class ImageFolder(FlaxCaeBuilder):
  """Any ROOT/<class>/**/<image> tree, resized at preparation time; one split, train.

  Construct with `config=image_folder_config(root, (H, W), channels)`.
  """

  name = 'flax_cae_image_folder'
  DISPLAY_NAME = 'image_folder'
  DESCRIPTION = 'Images in one folder per class, resized to one size.'

  def __init__(self, *, config: ImageFolderConfig, **kwargs):
    super().__init__(config=config, **kwargs)

  def _info(self):
    cfg = self.builder_config
    root = Path(cfg.root)
    names = None if root.is_dir() else _prepared_class_names(self)
    if names is None:  # (prepared before and the folder has gone: the prepared copy is enough)
      names = class_folders(root)
    return _LocalDatasetInfo(
        builder=self, description=cfg.description,
        features=_features((*cfg.image_size, cfg.channels), names),
        supervised_keys=('image', 'label'))

  @classmethod
  def find_sources(cls, source_dir):  # the folder is the source; _info already checked it
    return {}

  def _source_paths(self, dl_manager):
    return {}

  def _generators(self, paths):
    cfg = self.builder_config
    items, skipped = image_files(Path(cfg.root))
    if skipped:
      logging.warning('Skipped %d file(s) under %s that are not images by their extension: %s.',
                      len(skipped), cfg.root, ', '.join(skipped[:5]) + (
                          ', ...' if len(skipped) > 5 else ''))
    if not items:
      raise DataError(f'Image folder {cfg.root!r} holds no image files; put images '
                      f'({", ".join(IMAGE_EXTENSIONS)}) in its class sub-folders '
                      '(ROOT/<class>/<images>).')
    return {'train': ordered_map(self._decode, items)}

  def _decode(self, item):
    key, path, label = item
    cfg = self.builder_config
    image = decode_image(path, name=path, channels=cfg.channels, size=cfg.image_size,
                         fix='remove it from the image folder or convert it')
    return key, {'image': image, 'label': label}
