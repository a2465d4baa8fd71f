"""The one entry point to flax-cae's data: prepare once, then open random-access sources.

    src = get_source('mnist', 'validation', data_dir='~/tensorflow_datasets')
    arrays = load_arrays(src)  # {'image': uint8 [N, 28, 28, 1], 'label': int32 [N]}

Data sets are prepared on first use with the TFDS builders in builders/ (into
`data_dir`, as array_record files, without TensorFlow) and reused afterwards.
Splits are always 'train', 'validation' and 'test'; where a data set lacks one,
it is carved deterministically off the end of its train split (whose stored order
is a fixed, class-mixing permutation, see builders/mnist.py).
"""

import contextlib
import dataclasses
import io
import operator
import os
import shutil
import socket
import tempfile
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from flax_cae.data import builders
from flax_cae.runtime.errors import ConfigError, DataError, unknown_name, write_failure

try:  # TFDS's TensorFlow-free copy of the tf.train.Example proto
  from tensorflow_datasets.proto import tf_example_pb2
except ImportError:  # load_arrays then takes TFDS's own (slower) decoding path
  tf_example_pb2 = None

SPLITS = ('train', 'validation', 'test')


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What flax-cae knows about one data set.

  Attributes:
    builder: the TFDS builder class.
    tfds_splits: splits the builder writes; 'validation' and 'test' are carved
      from 'train' where they are missing.
    files: official files a user may have to fetch (name, URL); () = none.
    description: one line for help texts.
  """
  builder: type[builders.FlaxCaeBuilder]
  tfds_splits: tuple[str, ...]
  files: tuple[builders.SourceFile, ...]
  description: str


DATASETS: dict[str, DatasetSpec] = {
    'mnist': DatasetSpec(builders.Mnist, ('train', 'test'), builders.Mnist.SOURCE_FILES,
                         '28x28x1 digits; validation carved from train'),
    'colored_mnist': DatasetSpec(builders.ColoredMnist, ('train', 'test'),
                                 builders.Mnist.SOURCE_FILES,
                                 "28x28x3 MNIST digits tinted by seeded colours (S4); MNIST's "
                                 'files; validation carved from train'),
    'cifar10': DatasetSpec(builders.Cifar10, ('train', 'test'), builders.Cifar10.SOURCE_FILES,
                           '32x32x3 CIFAR-10; validation carved from train'),
    'cinic10': DatasetSpec(builders.Cinic10, ('train', 'validation', 'test'),
                           builders.Cinic10.SOURCE_FILES, '32x32x3 CINIC-10, its own three splits'),
    'image_folder': DatasetSpec(builders.ImageFolder, ('train',), (),
                                'ROOT/<class>/<images> at any size; validation and test '
                                'carved from train'),
    'lfw': DatasetSpec(builders.Lfw, ('train',), builders.Lfw.SOURCE_FILES,
                       "LFW faces cropped to the face, at any size: TFDS's lfw where prepared, "
                       'else lfw.tgz; validation and test carved from train'),
    'lfw_subset': DatasetSpec(builders.LfwSubset, ('train',), (),
                              "scikit-image's 200 25x25x1 LFW crops (no download); "
                              'validation and test carved from train'),
}


def dataset_names() -> list[str]:
  """Registry names, sorted."""
  return sorted(DATASETS)


def _spec(name: str) -> DatasetSpec:
  if name not in DATASETS:
    raise unknown_name('data set', name, dataset_names())
  return DATASETS[name]


# Data sets prepared at the size and channel count the config asks for.
SIZED = (builders.ImageFolder, builders.Lfw)


def _folder_shape(image_size, channels, name='image_folder') -> tuple[int, int, int]:
  """Validated (H, W, C) for a SIZED data set; image_size may be an int (square) or (H, W)."""
  if image_size is None or channels is None:
    raise ConfigError(f'Data set {name} needs an image size and a channel count; '
                      'set --config.data.image_size=(H, W) and --config.data.channels=1 or 3.')
  square = isinstance(image_size, (int, np.integer))
  size = (image_size, image_size) if square else tuple(image_size)
  if (len(size) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                and s > 0 for s in size)):
    raise ConfigError(f'image_size={image_size!r} is not a (height, width) pair of positive '
                      'integers; set --config.data.image_size=(H, W), e.g. (32, 32).')
  if channels not in (1, 3) or isinstance(channels, bool):
    raise ConfigError(f'channels={channels!r} is not supported; set --config.data.channels '
                      'to 1 (grayscale) or 3 (RGB).')
  return int(size[0]), int(size[1]), int(channels)


def image_shape(name: str, *, data_dir=None, source_dir=None, download=True,
                validation_size=5000, test_size=0, image_size=None,
                channels=None) -> tuple[int, int, int]:
  """(H, W, C) of a data set's images, without preparing anything.

  Takes the same keywords as get_source (only image_size and channels matter,
  and only for image_folder and lfw).
  """
  del data_dir, source_dir, download, validation_size, test_size  # same signature as get_source
  spec = _spec(name)
  if spec.builder in SIZED:
    return _folder_shape(image_size, channels, name)
  return tuple(spec.builder.IMAGE_SHAPE)


def _make_builder(spec, data_dir, source_dir, image_size, channels):
  if spec.builder is builders.ImageFolder:
    h, w, c = _folder_shape(image_size, channels)
    if not source_dir:
      raise ConfigError('Data set image_folder needs the folder to read; '
                        'set --config.data.source_dir=ROOT (laid out as ROOT/<class>/<images>).')
    config = builders.image_folder_config(source_dir, (h, w), c)
    return builders.ImageFolder(config=config, data_dir=data_dir, file_format='array_record')
  if spec.builder is builders.Lfw:
    h, w, c = _folder_shape(image_size, channels, 'lfw')
    config = builders.lfw_config((h, w), c)
    return builders.Lfw(config=config, source_dir=source_dir or None, data_dir=data_dir)
  return spec.builder(source_dir=source_dir or None, data_dir=data_dir, file_format='array_record')


def _is_prepared(builder) -> bool:
  return (Path(builder.data_path) / 'dataset_info.json').is_file()


class _Undo:
  """Remembers what exists under data_dir so a failed preparation can remove only what it made."""

  def __init__(self, builder):
    self.data_dir = Path(builder.data_dir_root)
    version_dir = Path(builder.data_path)
    # data_dir, data_dir/<name>[/<config>], .../<version>: top-down.
    rel = version_dir.relative_to(self.data_dir)
    self.chain = [self.data_dir] + [self.data_dir.joinpath(*rel.parts[:i + 1])
                                    for i in range(len(rel.parts))]
    self.existed = {p: p.exists() for p in self.chain}
    self.parent = version_dir.parent  # where TFDS puts incomplete.* folders
    self.parent_entries = set(os.listdir(self.parent)) if self.parent.is_dir() else None
    self.downloads = self.data_dir / 'downloads'
    self.download_entries = set(os.listdir(self.downloads)) if self.downloads.is_dir() else None

  def __call__(self):
    complete = (self.chain[-1] / 'dataset_info.json').is_file()
    if not complete:  # (complete: another process won a preparation race; keep its data)
      for path in self.chain:
        if not self.existed[path]:  # the top-most folder this call made holds all the rest
          shutil.rmtree(path, ignore_errors=True)
          break
    if self.parent_entries is not None and self.parent.is_dir():
      for entry in set(os.listdir(self.parent)) - self.parent_entries:
        if entry.startswith('incomplete.') or not complete:
          shutil.rmtree(self.parent / entry, ignore_errors=True)
    if self.downloads.is_dir():
      if self.download_entries is None:
        shutil.rmtree(self.downloads, ignore_errors=True)
      else:
        for entry in set(os.listdir(self.downloads)) - self.download_entries:
          target = self.downloads / entry
          if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
          else:
            target.unlink(missing_ok=True)


def _reachable(url: str, timeout: float = 5.0) -> bool:
  """Whether a TCP connection to the URL's host opens within `timeout` seconds."""
  parts = urllib.parse.urlparse(url)
  port = parts.port or (443 if parts.scheme == 'https' else 80)
  try:
    with socket.create_connection((parts.hostname, port), timeout=timeout):
      return True
  except OSError:
    return False


def _cannot_prepare(name, data_dir, reason):
  raise DataError(f'data set {name!r} cannot be prepared in {data_dir!r} ({reason}); set '
                  '--config.data.data_dir to a folder you can write to, with room for it (a '
                  'read-only folder is fine once the data set is prepared there).') from None


def _check_writable(name, data_dir):
  folder = data_dir  # the folder that exists (preparing makes the rest, and undoes it on failure)
  while not os.path.exists(folder) and os.path.dirname(folder) != folder:
    folder = os.path.dirname(folder)
  try:  # a real write: os.access passes for root on a read-only mount
    with tempfile.TemporaryFile(dir=folder):
      pass
  except OSError as e:
    _cannot_prepare(name, data_dir, e.strerror or str(e))


def prepare(name: str, *, data_dir, source_dir=None, download: bool = True,
            image_size=None, channels=None):
  """Prepares a data set in data_dir (once; later calls reuse it) and returns its TFDS builder.

  Args:
    name: a registry name (see dataset_names()).
    data_dir: the folder prepared data sets live in (created if needed).
    source_dir: a local folder with the official files (or their extracted
      form); for image_folder, the ROOT folder of images. None: download.
    download: whether TFDS may fetch the official files when source_dir is None.
    image_size: image_folder and lfw only: (H, W) (or an int for squares) to resize to.
    channels: image_folder and lfw only: 1 or 3.

  Raises:
    ConfigError: unknown name, or image_folder without image_size/channels/source_dir.
    DataError: source files missing or unreadable, or downloading failed. A
      failed preparation leaves nothing behind in data_dir.
  """
  spec = _spec(name)
  data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
  builder = _make_builder(spec, data_dir, source_dir, image_size, channels)
  if _is_prepared(builder):
    _check_folder_unchanged(builder)
    return builder
  version_dir = Path(builder.data_path)
  if version_dir.exists():
    # TFDS would happily "reuse" this folder, so refuse instead of reading an empty data set.
    raise DataError(f'{str(version_dir)!r} holds an incomplete copy of data set {name!r} '
                    '(no dataset_info.json); delete that folder and run again.')
  # Check for the files before TFDS writes anything.
  if builder.needs_files():
    absent = f'the data set is not prepared in {data_dir!r}' + (
        " (nor is TFDS's own lfw, which is read where prepared as array_record)"
        if spec.builder is builders.Lfw else '')
    if source_dir:
      spec.builder.find_sources(source_dir)
    elif not download:
      raise builders.missing_files_error(name, spec.files, f'{absent} and downloading is off')
    elif not _reachable(spec.files[0].url):
      # TFDS would retry for minutes on an offline machine; say so at once instead.
      raise builders.missing_files_error(
          name, spec.files, f'{absent} and {urllib.parse.urlparse(spec.files[0].url).hostname} '
          'cannot be reached from this machine')
  _check_writable(name, data_dir)
  undo = _Undo(builder)
  logging.info('Preparing data set %s in %s (once: later runs read it there).', name,
               builder.data_path)
  tfds.display_progress_bar(False)  # (and its banners on stdout: one line above says it all)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              try_download_gcs=False,      # flax_cae_* sets are never on TFDS's GCS bucket
              register_checksums=False,    # no checksum files ship with flax-cae...
              force_checksums_validation=False))  # ...so unknown checksums are fine
  except BaseException as e:  # Ctrl-C included: never leave a half-written data set
    undo()
    if isinstance(e, Exception) and _is_prepared(builder):
      # Another process (a host of the same job) prepared it first: use theirs.
      return _make_builder(spec, data_dir, source_dir, image_size, channels)
    if isinstance(e, OSError) and (write_failure(e) or 'disk space' in str(e)):
      _cannot_prepare(name, data_dir, write_failure(e) or ' '.join(str(e).split()))
    raise
  return builder


_folder_notes: dict[str, str] = {}  # prepared image folder -> what changed since ('' if nothing)


def _check_folder_unchanged(builder) -> str:
  """For a prepared image folder whose images were added or removed since: a warning (once
  per process) naming the prepared copy to delete; returns that note ('' if unchanged)."""
  if not isinstance(builder, builders.ImageFolder):
    return ''
  path = str(builder.data_path)
  if path not in _folder_notes:
    root = Path(builder.builder_config.root)
    prepared = builder.info.splits['train'].num_examples
    now = len(builders.image_files(root)[0]) if root.is_dir() else prepared
    _folder_notes[path] = '' if now == prepared else (
        f'image folder {str(root)!r} now holds {now} images but its prepared copy holds '
        f'{prepared}; delete {path!r} to prepare the folder again')
    if _folder_notes[path]:
      logging.warning('The %s; this run uses the prepared copy.', _folder_notes[path])
  return _folder_notes[path]


class SplitSource(Sequence):
  """Examples [start, stop) of one prepared TFDS split, as a random-access source.

  src[i] and src.__getitems__(indices) give dicts {'image': uint8 [H, W, C],
  'label': int}; negative indices count from the end; out-of-range ones raise
  IndexError (so iteration stops). Picklable when the TFDS source is.
  """

  def __init__(self, base, start: int, stop: int, name: str = ''):
    self.base, self.start, self.stop, self.name = base, int(start), int(stop), name
    self._fast = None  # whether read_into may parse records itself; decided on first use

  def __len__(self) -> int:
    return self.stop - self.start

  def _check_index(self, idx: np.ndarray) -> np.ndarray:
    n = len(self)
    idx = np.where(idx < 0, idx + n, idx)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
      raise IndexError(f'indices out of range for {self.name or "this source"} ({n} examples)')
    return idx + self.start

  def __getitem__(self, index) -> dict[str, Any]:
    i = operator.index(index)
    n = len(self)
    if i < 0:
      i += n
    if not 0 <= i < n:
      raise IndexError(f'index {index} is out of range for {self.name or "this source"} '
                       f'({n} examples)')
    return self.base[self.start + i]

  def __getitems__(self, indices) -> list[dict[str, Any]]:
    idx = self._check_index(np.asarray(indices, dtype=np.int64).reshape(-1))
    return list(self.base.__getitems__(idx.tolist())) if idx.size else []

  def _parse(self, records, images: np.ndarray, labels: np.ndarray) -> None:
    """Parses raw array_record records (tf.train.Example) straight into the outputs."""
    shape = images.shape[1:]
    for j, record in enumerate(records):
      feature = tf_example_pb2.Example.FromString(record).features.feature
      images[j] = np.frombuffer(feature['image'].bytes_list.value[0], np.uint8).reshape(shape)
      labels[j] = feature['label'].int64_list.value[0]

  def _fast_path_works(self) -> bool:
    """Whether parsing records directly gives exactly what TFDS's decoder gives."""
    reader = getattr(self.base, 'data_source', None)
    if tf_example_pb2 is None or reader is None or not len(self):
      return False
    try:
      image = np.empty((1, *self.image_shape), np.uint8)
      label = np.empty((1,), np.int64)
      self._parse(reader.__getitems__([self.start]), image, label)
    except Exception:  # pylint: disable=broad-except  (another storage format)
      return False
    want = self.base[self.start]
    return bool(np.array_equal(image[0], want['image']) and label[0] == want['label'])

  def read_into(self, indices, images: np.ndarray, labels: np.ndarray) -> None:
    """Reads examples `indices` into images (uint8 [N, H, W, C]) and labels ([N]).

    About 5x faster than __getitems__: records are parsed directly (the images are
    stored as raw bytes) instead of through TFDS's generic per-feature decoder.
    """
    idx = self._check_index(np.asarray(indices, dtype=np.int64).reshape(-1))
    if not idx.size:
      return
    if self._fast is None:
      self._fast = self._fast_path_works()
    if self._fast:
      self._parse(self.base.data_source.__getitems__(idx.tolist()), images, labels)
    else:
      for j, ex in enumerate(self.base.__getitems__(idx.tolist())):
        images[j] = ex['image']
        labels[j] = ex['label']

  @property
  def dataset_info(self):
    return self.base.dataset_info

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.base.dataset_info.features['image'].shape)

  @property
  def class_names(self) -> list[str]:
    return list(self.base.dataset_info.features['label'].names)

  def __repr__(self):
    return f'SplitSource({self.name!r}, examples {self.start}:{self.stop} of {self.base!r})'


def _carve(name, spec, builder, split, validation_size, test_size) -> tuple[str, int, int]:
  """(TFDS split, start, stop) for one flax-cae split."""
  if split in spec.tfds_splits:
    if split != 'train' or 'validation' in spec.tfds_splits:
      n = builder.info.splits[split].num_examples
      return split, 0, n
  n = builder.info.splits['train'].num_examples
  # Validation and test carved off the end of train: train | validation | test.
  carve_test = 'test' not in spec.tfds_splits
  v, t = validation_size, (test_size if carve_test else 0)
  if v + t >= n:
    what = (f'validation_size={v} plus test_size={t} leave' if carve_test
            else f'validation_size={v} leaves')
    fix = ('--config.data.validation_size or --config.data.test_size' if carve_test
           else '--config.data.validation_size')
    changed = _check_folder_unchanged(builder)
    raise ConfigError(f'{what} no training images in data set {name!r}, whose train split '
                      f'has {n} images; lower {fix}'
                      + (f' (the {changed})' if changed else '') + '.')
  bounds = {'train': (0, n - v - t), 'validation': (n - v - t, n - t), 'test': (n - t, n)}
  return 'train', *bounds[split]


def _check_size(key: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
    raise ConfigError(f'{key}={value!r} is not a non-negative integer; '
                      f'set --config.data.{key} to a number of images (0 or more).')
  return int(value)


def get_source(name: str, split: str, *, data_dir, source_dir=None, download: bool = True,
               validation_size: int = 5000, test_size: int = 0, image_size=None,
               channels=None) -> SplitSource:
  """A random-access source over one split of a data set, prepared on first use.

  Args:
    name: a registry name (see dataset_names()).
    split: 'train', 'validation' or 'test'.
    data_dir, source_dir, download, image_size, channels: as for prepare().
    validation_size: images carved off the end of train for 'validation'
      (mnist, cifar10, image_folder, lfw, lfw_subset; cinic10 has its own).
    test_size: images carved off the end of train for 'test' (image_folder,
      lfw, lfw_subset only; the others have an official test split). 0 gives an
      empty test source.

  Returns:
    A SplitSource: len(), src[i], src.__getitems__(list) -> dicts
    {'image': uint8 [H, W, C], 'label': int}.
  """
  spec = _spec(name)
  if split not in SPLITS:
    raise ConfigError(f'Unknown split {split!r}; use one of {", ".join(map(repr, SPLITS))}.')
  validation_size = _check_size('validation_size', validation_size)
  test_size = _check_size('test_size', test_size)
  builder = prepare(name, data_dir=data_dir, source_dir=source_dir, download=download,
                    image_size=image_size, channels=channels)
  tfds_split, start, stop = _carve(name, spec, builder, split, validation_size, test_size)
  # Open the whole TFDS split and remap indices: TFDS sub-splits ('train[-N:]') fail
  # on empty ranges ("Paths sequence can not be of 0 length") and raise ValueError,
  # not IndexError, out of range.
  base = builder.as_data_source(split=tfds_split)
  return SplitSource(base, start, stop, name=f'{name}/{split}')


def load_arrays(source, indices=None, *, chunk: int = 1024) -> dict[str, np.ndarray]:
  """Reads many examples at once: {'image': uint8 [N, H, W, C], 'label': int32 [N]}.

  Args:
    source: a source from get_source (or any len()/[]-able of example dicts).
    indices: which examples, in order (default: all).
    chunk: examples per __getitems__ call.
  """
  if indices is None:
    indices = np.arange(len(source))
  indices = np.asarray(indices, dtype=np.int64).reshape(-1)
  n = len(indices)
  shape = getattr(source, 'image_shape', None)
  images = np.empty((n, *shape), np.uint8) if shape is not None else None
  labels = np.empty((n,), np.int32)
  if isinstance(source, SplitSource):
    for lo in range(0, n, chunk):
      source.read_into(indices[lo:lo + chunk], images[lo:lo + chunk], labels[lo:lo + chunk])
    return {'image': images, 'label': labels}
  getitems = getattr(source, '__getitems__', None)
  for lo in range(0, n, chunk):
    part = indices[lo:lo + chunk]
    examples = getitems(part.tolist()) if getitems else [source[int(i)] for i in part]
    for j, ex in enumerate(examples):
      if images is None:  # a source that does not know its shape: take the first image's
        images = np.empty((n, *np.shape(ex['image'])), np.uint8)
      images[lo + j] = ex['image']
      labels[lo + j] = ex['label']
  if images is None:
    images = np.empty((0, 0, 0, 0), np.uint8)
  return {'image': images, 'label': labels}
