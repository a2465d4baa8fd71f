"""Shared machinery of the builders: the FlaxCaeBuilder base class, source files, image decoding.

FlaxCaeBuilder holds what every builder does alike: take `source_dir` or let TFDS's
download manager fetch the official files, describe raw-bytes images with class
labels, and say which files are missing and where to get them. decode_image and
ordered_map decode image files (paths or bytes) in order on a few threads.
"""

import collections
import concurrent.futures
import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from flax_cae.runtime.errors import DataError

# Decoding threads: Pillow releases the GIL while it decodes, and file reads wait on I/O.
_DECODE_THREADS = min(8, os.cpu_count() or 1)


class SourceFile(NamedTuple):
  """One official file a data set is prepared from."""
  name: str  # file name in source_dir
  url: str   # where to download it


class _LocalDatasetInfo(tfds.core.DatasetInfo):
  """DatasetInfo that never looks for pre-computed info on TFDS's GCS bucket."""

  def initialize_from_bucket(self) -> None:
    # flax_cae_* data sets are never on the bucket, and TFDS's version leaks an
    # empty temporary folder (tempfile.mkdtemp) on every call.
    pass


def _features(shape: tuple[int, int, int], class_names: Sequence[str] | None):
  """Raw-bytes images and class labels; class_names None: set before generating (Lfw)."""
  return tfds.features.FeaturesDict({
      'image': tfds.features.Tensor(shape=shape, dtype=np.uint8, encoding='bytes'),
      'label': tfds.features.ClassLabel(
          names=None if class_names is None else list(class_names)),
  })


def _prepared_class_names(builder) -> list[str] | None:
  """The class names a prepared copy stored (label.labels.txt), or None if it is not there."""
  labels_file = Path(builder.data_path) / 'label.labels.txt'
  if not labels_file.is_file():
    return None
  return [n for n in labels_file.read_text().split('\n') if n]


def missing_files_error(dataset: str, files: Sequence[SourceFile], problem: str) -> DataError:
  """The one-sentence error for absent source files: which, where from, and the fix."""
  names = ', '.join(f.name for f in files)
  urls = [f.url for f in files]
  # Files from one folder (MNIST's four) are named by that folder, not four long URLs.
  folder = os.path.commonprefix(urls).rpartition('/')[0] + '/'
  urls = folder if len(urls) > 1 and len(folder) > len('https://x/') else ', '.join(urls)
  them = 'them' if len(files) > 1 else 'it'
  return DataError(
      f'Data set {dataset!r} needs {names} but {problem}; download {them} from {urls} '
      'into a folder and point flax-cae at it with --config.data.source_dir=DIR.')


def _is_hidden(name: str) -> bool:
  return name.startswith('.')


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any],
                threads: int = _DECODE_THREADS) -> Iterator[Any]:
  """Yields fn(item) for each item, in order, computed `threads` at a time.

  At most 16 * threads results are in flight, so memory stays bounded on any
  number of items; an exception in fn surfaces when its result is reached.
  """
  if threads <= 1:
    yield from map(fn, items)
    return
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    pending = collections.deque()
    try:
      for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= 16 * threads:
          yield pending.popleft().result()
      while pending:
        yield pending.popleft().result()
    finally:
      for f in pending:  # early exit: don't decode what nobody will read
        f.cancel()


def _unreadable(name: str, error: BaseException, fix: str) -> DataError:
  return DataError(f'Cannot read {name!r} as an image ({type(error).__name__}: {error}); {fix}.')


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
  """Converts any Pillow mode to 'L' (channels=1) or 'RGB' (channels=3)."""
  mode = 'L' if channels == 1 else 'RGB'
  if img.mode == mode:
    return img
  if img.mode in ('I', 'F') or img.mode.startswith('I;16'):
    # 16-bit, 32-bit and float images: Pillow's convert clips at 255, so rescale first.
    a = np.asarray(img, dtype=np.float64)
    if img.mode == 'F' and a.max(initial=0.0) <= 1.0:
      top = 1.0  # float in [0, 1]
    elif img.mode.startswith('I;16') or a.max(initial=0.0) > 255:
      top = 65535.0  # 16-bit range
    else:
      top = 255.0  # 8-bit values held in a wider mode
    img = Image.fromarray(np.clip(np.round(a * (255.0 / top)), 0, 255).astype(np.uint8), 'L')
  return img.convert(mode)


def decode_image(file: str | Path | bytes, *, name: str, channels: int,
                 size: tuple[int, int] | None = None, crop=None, fix: str) -> np.ndarray:
  """Decodes an image file (path or its bytes) to uint8 [H, W, channels].

  Args:
    file: a path, or the file's bytes.
    name: how errors name the file.
    channels: 1 (grayscale) or 3 (RGB); other modes (RGBA, P, CMYK, 16-bit) are converted.
    size: (H, W) to resize to (Pillow bicubic, antialiased), or None to keep the size.
    crop: (left, top, right, bottom) as fractions of the image, cut before resizing; None: all.
    fix: the second half of the error sentence: how to fix an unreadable file.

  Raises:
    DataError: the file is not a readable image.
  """
  try:
    with Image.open(io.BytesIO(file) if isinstance(file, bytes) else file) as img:
      if size is not None and crop is None and img.format == 'JPEG':
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale for free when the target is that small.
        img.draft('L' if channels == 1 else 'RGB', (size[1], size[0]))
      img = _to_mode(img, channels)
      if crop is not None:
        w, h = img.size
        img = img.crop((round(crop[0] * w), round(crop[1] * h), round(crop[2] * w),
                        round(crop[3] * h)))
      if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BICUBIC)
      arr = np.asarray(img, dtype=np.uint8)
  except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
    # UnidentifiedImageError (not an image) and truncated files are OSErrors.
    raise _unreadable(name, e, fix) from e
  return arr.reshape(arr.shape[0], arr.shape[1], channels)


class _ClassProperty(property):
  """A read-only property looked up on the class (TFDS reads `code_path` that way)."""

  def __get__(self, obj, objtype=None):
    return self.fget(objtype if objtype is not None else type(obj))


class FlaxCaeBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared plumbing: `source_dir` or download, fixed image shape and classes.

  Subclasses set IMAGE_SHAPE, CLASS_NAMES, SOURCE_FILES and implement
  `_find_sources(source_dir)` and `_generators(paths)`.
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  IMAGE_SHAPE: tuple[int, int, int] = (0, 0, 0)
  CLASS_NAMES: tuple[str, ...] = ()
  SOURCE_FILES: tuple[SourceFile, ...] = ()  # what a user has to fetch; () = nothing
  DISPLAY_NAME = ''  # the flax-cae registry name, for error messages
  DESCRIPTION = ''
  HOMEPAGE = ''

  # TFDS looks for a checksums file next to the builder's code; finding that code
  # imports `importlib_resources`, a Python<3.9 backport TFDS 4.9.10 no longer
  # installs (ModuleNotFoundError). flax-cae ships no checksums: no code path needed.
  code_path = _ClassProperty(lambda cls: None)

  def __init__(self, *, source_dir: str | os.PathLike | None = None, **kwargs):
    """Makes the builder.

    Args:
      source_dir: a folder holding the official files (or their extracted
        form); None lets TFDS's download manager fetch them.
      **kwargs: DatasetBuilder's (data_dir, config...); file_format defaults
        to 'array_record', the TensorFlow-free random-access format.
    """
    self.source_dir = Path(source_dir).expanduser() if source_dir else None
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return _LocalDatasetInfo(
        builder=self, description=self.DESCRIPTION, homepage=self.HOMEPAGE or None,
        features=_features(self.IMAGE_SHAPE, self.CLASS_NAMES),
        supervised_keys=('image', 'label'))

  @classmethod
  def find_sources(cls, source_dir: str | os.PathLike) -> dict[str, Path]:
    """Paths of the source files in `source_dir`; DataError naming any that are missing."""
    source_dir = Path(source_dir).expanduser()
    if not source_dir.is_dir():
      raise DataError(f'source_dir {str(source_dir)!r} is not a folder; '
                      'set --config.data.source_dir to the folder holding the data set files.')
    found = cls._find_sources(source_dir)
    missing = [f for f in cls.SOURCE_FILES if f.name not in found]
    if missing:
      raise missing_files_error(cls.DISPLAY_NAME, missing, f'they are not in {str(source_dir)!r}'
                                if len(missing) > 1 else f'it is not in {str(source_dir)!r}')
    return found

  @classmethod
  def _find_sources(cls, source_dir: Path) -> dict[str, Path]:
    """{SOURCE_FILES name: path} for those present in source_dir (folder forms allowed)."""
    return {f.name: source_dir / f.name for f in cls.SOURCE_FILES
            if (source_dir / f.name).is_file()}

  def _source_paths(self, dl_manager) -> dict[str, Path]:
    if self.source_dir is not None:
      return self.find_sources(self.source_dir)
    if not self.SOURCE_FILES:
      return {}
    try:
      paths = dl_manager.download({f.name: f.url for f in self.SOURCE_FILES})
    except Exception as e:  # offline, HTTP error, disk full...: all mean "get the files yourself"
      raise missing_files_error(
          self.DISPLAY_NAME, self.SOURCE_FILES,
          f'downloading failed ({type(e).__name__}: {str(e)[:200]})') from e
    return {k: Path(v) for k, v in paths.items()}

  def needs_files(self) -> bool:
    """Whether preparing reads SOURCE_FILES (from source_dir or a download)."""
    return bool(self.SOURCE_FILES)

  def _split_generators(self, dl_manager):
    return self._generators(self._source_paths(dl_manager))

  def _generators(self, paths: dict[str, Path]) -> dict[str, Iterator]:
    raise NotImplementedError

  def _generate_examples(self, *args):  # required by TFDS; _generators supplies the real ones
    raise NotImplementedError
