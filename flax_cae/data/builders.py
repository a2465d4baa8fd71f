"""TFDS builders that prepare flax-cae's data sets without TensorFlow.

Every builder writes `array_record` files holding {'image': uint8 [H, W, C],
'label': int}. Images are stored as raw bytes (`tfds.features.Tensor` with
`encoding='bytes'`): `tfds.features.Image` needs TensorFlow to encode, and raw
bytes serialize ~10x faster and take half the space of TFDS's default int64
lists. TFDS orders the stored examples by a hash of their keys, so the order is
deterministic, independent of the order files were read in, and mixes classes
(which is what lets sources.py carve validation splits off the end).

The builders skip TFDS's global registry (`skip_registration=True`): their
names (`flax_cae_*`) never clash with TFDS's own `mnist`/`cifar10`, and
re-importing this module never fails on a duplicate name.

Each builder takes `source_dir`, a local folder holding the official files; left
out, TFDS's download manager fetches them from the official URLs.
"""

import collections
import concurrent.futures
import dataclasses
import gzip
import hashlib
import io
import logging
import os
import pickle
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from flax_cae.runtime.errors import DataError

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
                   'horse', 'ship', 'truck')
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


def _open_compressed(path: Path):
  """Opens a possibly gzip/bzip2/xz-compressed file for buffered sequential reading."""
  with open(path, 'rb') as f:
    magic = f.read(6)
  if magic[:2] == b'\x1f\x8b':
    return gzip.open(path, 'rb')
  if magic[:3] == b'BZh':
    import bz2  # pylint: disable=g-import-not-at-top
    return bz2.open(path, 'rb')
  if magic == b'\xfd7zXZ\x00':
    import lzma  # pylint: disable=g-import-not-at-top
    return lzma.open(path, 'rb')
  return open(path, 'rb', buffering=1 << 20)


def _tar_number(field: bytes) -> int:
  if field[0] & 0x80:  # GNU base-256, for sizes of 8 GiB and more
    return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], 'big')
  return int(field.split(b'\0', 1)[0].strip() or b'0', 8)


def iter_tar_files(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
  """Streams the regular files of a (compressed) tar archive: (name, read()) pairs.

  A minimal reader of the ustar, GNU (long names) and pax (path/size records)
  formats. It exists for speed: Python's tarfile spends ~60 us parsing each
  header, a third of the time of preparing CINIC-10's 270k PNGs from its
  tarball; this takes a few us. read() returns the member's bytes and only works
  until the iteration moves on; members nobody reads are skipped.

  Raises:
    tarfile.TarError: a corrupt header.
  """
  with _open_compressed(path) as f:
    long_name = None
    pax: dict[str, str] = {}
    while True:
      header = f.read(512)
      if len(header) < 512 or header == bytes(512):
        return  # end-of-archive marker (or a truncated archive without one)
      checksum = _tar_number(header[148:156])
      if checksum != sum(header[:148]) + 256 + sum(header[156:]):
        raise tarfile.TarError(f'bad tar header checksum at byte {f.tell() - 512}')
      kind = header[156:157]
      size = int(pax.get('size', _tar_number(header[124:136])))
      padded = (size + 511) // 512 * 512
      if kind in (b'L', b'K', b'x', b'g'):  # metadata for the next member (or, 'g', all)
        data = f.read(padded)[:size]
        if kind == b'L':
          long_name = data.split(b'\0', 1)[0].decode('utf-8', 'surrogateescape')
        elif kind == b'x':
          pax = _parse_pax(data)
        continue
      name = header[:100].split(b'\0', 1)[0]
      if header[257:263] == b'ustar\x00' and header[345] != 0:  # POSIX name prefix
        name = header[345:500].split(b'\0', 1)[0] + b'/' + name
      name = pax.get('path') or long_name or name.decode('utf-8', 'surrogateescape')
      long_name, pax = None, {}
      if kind in (b'0', b'\0', b'7'):  # regular files
        consumed = False

        def read(size=size, padded=padded):
          nonlocal consumed
          consumed = True
          return f.read(padded)[:size]

        yield name, read
        if not consumed:
          f.read(padded)
      elif padded:  # links, folders, devices: skip whatever data they carry
        f.read(padded)


def _parse_pax(data: bytes) -> dict[str, str]:
  """Parses pax extended-header records ('<length> <key>=<value>' lines) into a dict."""
  records, pos = {}, 0
  while pos < len(data):
    space = data.index(b' ', pos)
    length = int(data[pos:space])
    key, _, value = data[space + 1:pos + length - 1].partition(b'=')
    records[key.decode()] = value.decode('utf-8', 'surrogateescape')
    pos += length
  return records


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


# ------------------------------------------------------------------------------------------- MNIST

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


# ----------------------------------------------------------------------------------------- CIFAR-10

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


# ----------------------------------------------------------------------------------------- CINIC-10

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


# ------------------------------------------------------------------------------------- image folder

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
