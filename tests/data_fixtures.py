"""Small real-data fixtures, built in a tmp dir from ../shared/data (see its README.md).

Every fixture holds real images (CIFAR-10 training JPEGs, official MNIST test
digits) written in the exact official on-disk format of a data set, so the
builders are tested on the layouts they will meet, without any download.
"""

import gzip
import io
import math
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
CIFAR_JPEG_TARBALL = SHARED_DATA / 'cifar10-jpeg-train.tar.gz'
MNIST_DIR = SHARED_DATA / 'mnist'
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
                   'horse', 'ship', 'truck')
MNIST_T10K = ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')

_cache: dict = {}  # per test session: the tarball takes ~2 s to stream


def require_shared_data(*kinds: str) -> None:
  """Skips the calling test when ../shared/data lacks what it needs.

  Args:
    *kinds: 'cifar' (the CIFAR-10 JPEG tarball) and/or 'mnist' (the t10k IDX
      files); none means both.
  """
  kinds = kinds or ('cifar', 'mnist')
  needed = ([CIFAR_JPEG_TARBALL] if 'cifar' in kinds else []) + (
      [MNIST_DIR / f for f in MNIST_T10K] if 'mnist' in kinds else [])
  missing = [str(p) for p in needed if not p.is_file()]
  if missing:
    pytest.skip(f'../shared/data is absent: the real-data fixtures need {", ".join(missing)}.')


# --------------------------------------------------------------------------------------- CIFAR-10


def cifar_jpegs(per_class: int) -> dict[str, list[tuple[str, bytes]]]:
  """{class: [(file name, JPEG bytes)] * per_class}: the first files of each class in the tar."""
  require_shared_data('cifar')
  cached = _cache.get('cifar_jpegs')
  if cached is None or cached[0] < per_class:
    keep = max(per_class, 100)  # read a little more than asked so later calls hit the cache
    members = {c: [] for c in CIFAR10_CLASSES}
    with tarfile.open(CIFAR_JPEG_TARBALL, 'r|gz') as tar:  # one streaming pass
      for m in tar:
        parts = m.name.split('/')
        if m.isfile() and len(parts) == 3 and parts[1] in members and len(members[parts[1]]) < keep:
          members[parts[1]].append((parts[2], tar.extractfile(m).read()))
    cached = _cache['cifar_jpegs'] = (keep, members)
  return {c: v[:per_class] for c, v in cached[1].items()}


def decode_rgb(data: bytes) -> np.ndarray:
  """JPEG/PNG bytes -> uint8 [H, W, 3]."""
  with Image.open(io.BytesIO(data)) as img:
    return np.asarray(img.convert('RGB'))


def cifar_images(per_class: int) -> dict[str, list[np.ndarray]]:
  """{class: [uint8 [32, 32, 3]] * per_class}, decoded from the real JPEGs."""
  return {c: [decode_rgb(b) for _, b in v] for c, v in cifar_jpegs(per_class).items()}


def cifar_samples(n: int) -> tuple[np.ndarray, np.ndarray]:
  """n real CIFAR-10 images, classes interleaved (0, 1, ..., 9, 0, ...).

  Returns:
    (uint8 [n, 32, 32, 3], int [n]).
  """
  if n > 50000:
    raise ValueError(f'cifar_samples: asked for {n} images but CIFAR-10 has 50000 training images')
  per_class = math.ceil(n / 10)
  images = cifar_images(per_class)
  labels = np.arange(n) % 10
  stack = np.stack([images[CIFAR10_CLASSES[lab]][i // 10] for i, lab in enumerate(labels)]) \
      if n else np.zeros((0, 32, 32, 3), np.uint8)
  return stack, labels


def cifar_jpeg_tree(tmp_path, per_class: int = 10) -> Path:
  """ROOT/<class>/NNNN.jpg with the first per_class real JPEGs of each class; returns ROOT."""
  root = Path(tmp_path) / 'cifar10_jpeg'
  for cls, files in cifar_jpegs(per_class).items():
    (root / cls).mkdir(parents=True, exist_ok=True)
    for name, data in files:
      (root / cls / name).write_bytes(data)
  return root


def _pickle_bytes(obj) -> bytes:
  return pickle.dumps(obj, protocol=2)  # the official batches are Python 2 (protocol 2) pickles


def cifar_python_tarball(tmp_path, n_train_per_batch: int = 20, n_test: int = 30) -> Path:
  """A `cifar-10-python.tar.gz` in the official format, made of real CIFAR-10 images.

  Five training batches of n_train_per_batch images and a test batch of n_test,
  each a pickled dict {b'batch_label', b'labels', b'data' uint8 [N, 3072] in
  CHW order, b'filenames'}, plus batches.meta, under `cifar-10-batches-py/`.
  Returns the tarball's path (alone in its folder, the source_dir).
  """
  n_train = 5 * n_train_per_batch
  images, labels = cifar_samples(n_train + n_test)
  flat = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # HWC -> official CHW rows

  def batch(label: str, lo: int, hi: int) -> bytes:
    return _pickle_bytes({
        b'batch_label': label.encode(),
        b'labels': [int(x) for x in labels[lo:hi]],
        b'data': np.ascontiguousarray(flat[lo:hi]),
        b'filenames': [f'fixture_{i:05d}.png'.encode() for i in range(lo, hi)],
    })

  files = {'batches.meta': _pickle_bytes({
      b'num_cases_per_batch': n_train_per_batch,
      b'label_names': [c.encode() for c in CIFAR10_CLASSES],
      b'num_vis': 3072})}
  for b in range(5):
    lo = b * n_train_per_batch
    files[f'data_batch_{b + 1}'] = batch(f'training batch {b + 1} of 5', lo, lo + n_train_per_batch)
  files['test_batch'] = batch('testing batch 1 of 1', n_train, n_train + n_test)
  files['readme.html'] = b'<html>fixture</html>\n'
  folder = Path(tmp_path) / 'cifar10_python'
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / 'cifar-10-python.tar.gz'
  with tarfile.open(path, 'w:gz') as tar:
    _add_dir(tar, 'cifar-10-batches-py')
    for name, data in files.items():
      _add_bytes(tar, f'cifar-10-batches-py/{name}', data)
  return path


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
  info = tarfile.TarInfo(name)
  info.type, info.mode = tarfile.DIRTYPE, 0o755
  tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size, info.mode = len(data), 0o644
  tar.addfile(info, io.BytesIO(data))


# ----------------------------------------------------------------------------------------- CINIC-10

# ImageNet-named extras per split: (class, wnid, Pillow mode): one grayscale and one
# RGBA PNG, both of which the CINIC-10 builder must turn into RGB.
CINIC_IMAGENET_EXTRAS = (('airplane', 'n02691156', 'L'), ('bird', 'n01530575', 'RGBA'))


def _png(image: np.ndarray, mode: str) -> bytes:
  img = Image.fromarray(image)
  if mode == 'L':
    img = img.convert('L')
  elif mode == 'RGBA':
    alpha = Image.fromarray(np.full(image.shape[:2], 200, np.uint8))
    img = img.convert('RGBA')
    img.putalpha(alpha)
  buf = io.BytesIO()
  img.save(buf, 'PNG')
  return buf.getvalue()


def cinic_tree(tmp_path, per_class_per_split: int = 3) -> Path:
  """A CINIC-10 folder in the official layout, made of real CIFAR-10 images as PNGs.

  ROOT/{train,valid,test}/<class>/cifar10-<split>-<index>.png, per_class_per_split
  per class and split, plus per split a grayscale `n02691156_<i>.png` (airplane)
  and an RGBA `n01530575_<i>.png` (bird). Returns ROOT (named CINIC-10).
  """
  k = per_class_per_split
  images = cifar_images(3 * k + 1)  # +1: the ImageNet-named extras of each split
  root = Path(tmp_path) / 'CINIC-10'
  for s, split in enumerate(('train', 'valid', 'test')):
    index = 0
    for cls in CIFAR10_CLASSES:
      folder = root / split / cls
      folder.mkdir(parents=True, exist_ok=True)
      for j in range(k):
        data = _png(images[cls][s * k + j], 'RGB')
        (folder / f'cifar10-{split}-{index}.png').write_bytes(data)
        index += 1
    for e, (cls, wnid, mode) in enumerate(CINIC_IMAGENET_EXTRAS):
      # Distinct real images: the last one of each class, darkened per split.
      image = (images[cls][3 * k] // (s + 1)).astype(np.uint8)
      (root / split / cls / f'{wnid}_{1000 + 10 * s + e}.png').write_bytes(_png(image, mode))
  return root


def tar_folder(folder: Path, tarball: Path, *, top_level: bool) -> Path:
  """Packs folder into tarball (gzip), with the folder's name as top-level entry or without."""
  with tarfile.open(tarball, 'w:gz') as tar:
    for path in sorted(folder.rglob('*')):
      rel = path.relative_to(folder).as_posix()
      tar.add(path, arcname=f'{folder.name}/{rel}' if top_level else rel, recursive=False)
  return tarball


# -------------------------------------------------------------------------------------------- MNIST


def _read_idx_gz(path: Path) -> np.ndarray:
  data = gzip.decompress(path.read_bytes())
  ndim = data[3]
  dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def mnist_t10k() -> tuple[np.ndarray, np.ndarray]:
  """The official MNIST test set: (uint8 [10000, 28, 28], uint8 [10000])."""
  require_shared_data('mnist')
  if 'mnist' not in _cache:
    _cache['mnist'] = (_read_idx_gz(MNIST_DIR / MNIST_T10K[0]),
                       _read_idx_gz(MNIST_DIR / MNIST_T10K[1]))
  return _cache['mnist']


def write_idx_gz(path: Path, array: np.ndarray) -> None:
  """Writes a uint8 array as a gzipped IDX file (magic 0x0000 0x08 ndim, big-endian dims)."""
  array = np.ascontiguousarray(array, dtype=np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + b''.join(
      int(d).to_bytes(4, 'big') for d in array.shape)
  path.write_bytes(gzip.compress(header + array.tobytes(), mtime=0))


def mnist_idx_dir(tmp_path, n_train: int = 300, n_test: int = 100) -> Path:
  """A folder with the four official-named MNIST IDX .gz files, made of real t10k digits.

  Train holds t10k digits [0, n_train), test the next n_test. Returns the folder.
  """
  images, labels = mnist_t10k()
  if n_train + n_test > len(images):
    raise ValueError(f'n_train + n_test must be at most {len(images)}')
  folder = Path(tmp_path) / 'mnist_idx'
  folder.mkdir(parents=True, exist_ok=True)
  parts = {'train': slice(0, n_train), 't10k': slice(n_train, n_train + n_test)}
  for prefix, sl in parts.items():
    write_idx_gz(folder / f'{prefix}-images-idx3-ubyte.gz', images[sl])
    write_idx_gz(folder / f'{prefix}-labels-idx1-ubyte.gz', labels[sl])
  return folder


def lfw_tree(tmp_path, people: int = 10, per_person: int = 10) -> Path:
  """LFW's extracted layout, lfw/<Person>/<Person>_NNNN.jpg, 250x250 RGB JPEGs, from the real
  faces of scikit-image's LFW subset: each 25x25 face is enlarged to 120x120 and pasted where
  LFW's aligned photos have the face (centre row 133, column 125) on a graded background."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  faces = skimage.data.lfw_subset()[:100]  # the first 100 are faces
  root = Path(tmp_path) / 'lfw_source'
  yy, xx = np.mgrid[0:250, 0:250]
  for p in range(people):
    person = f'Person_{chr(65 + p)}{p:02d}'
    (root / 'lfw' / person).mkdir(parents=True)
    for k in range(per_person):
      face = faces[(p * per_person + k) % len(faces)]
      canvas = (40 + 0.3 * yy + 0.2 * xx + 30 * (p % 3)).astype(np.uint8)
      rgb = np.stack([canvas, canvas[::-1], canvas.T], -1)
      big = Image.fromarray(np.uint8(face * 255)).resize((120, 120), Image.Resampling.BICUBIC)
      rgb[73:193, 65:185] = np.asarray(big)[..., None] * np.array([1.0, 0.9, 0.8])
      Image.fromarray(rgb).save(root / 'lfw' / person / f'{person}_{k + 1:04d}.jpg', quality=90)
  return root


def tfds_lfw(tmp_path, data_dir: Path, **tree_kw) -> Path:
  """TFDS's own `lfw` prepared (array_record) in data_dir by TFDS's lfw builder, from
  lfw_tree's images instead of its download; returns the extracted tree it read.

  Only where the files come from changes: TFDS's builder lists them with tf.io.gfile (its
  one use of TensorFlow), so the listing is done with os here; its features, keys and
  encoding are TFDS's own."""
  import os  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.datasets.lfw import lfw_dataset_builder  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from flax_cae.data import builders  # pylint: disable=g-import-not-at-top
  tree = lfw_tree(tmp_path, **tree_kw)

  class LocalLfw(lfw_dataset_builder.Builder, skip_registration=True):
    name = 'lfw'
    __module__ = lfw_dataset_builder.__name__  # where TFDS finds lfw's metadata and checksums
    # TFDS 4.9.10's code_path needs the importlib_resources backport it no longer installs.
    code_path = builders._ClassProperty(lambda cls: Path(lfw_dataset_builder.__file__))  # pylint: disable=protected-access

    def _split_generators(self, dl_manager):
      return [tfds.core.SplitGenerator(name='train',
                                       gen_kwargs={'data_path': str(tree / 'lfw')})]

    def path_maker(self, path):
      return [[d, os.path.join(path, d, f)] for d in sorted(os.listdir(path))
              for f in sorted(os.listdir(os.path.join(path, d)))]

  LocalLfw(data_dir=str(data_dir), file_format='array_record').download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return tree
