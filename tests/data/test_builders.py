"""The TFDS builders and sources.py on small real-data fixtures, offline and TensorFlow-free."""

import dataclasses
import functools
import gzip
import http.server
import io
import os
import pickle
import shutil
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import data_fixtures as fx
from flax_cae.data import builders, sources
from flax_cae.runtime.errors import ConfigError, DataError

SPLITS = ('train', 'validation', 'test')


@pytest.fixture(autouse=True)
def no_tensorflow():
  """Every test must leave TensorFlow unimported (it is not even installed)."""
  yield
  assert 'tensorflow' not in sys.modules


def arrays(name, split, **kw):
  return sources.load_arrays(sources.get_source(name, split, **kw))


def multiset(images, labels):
  """Order-free fingerprint of a set of labelled images."""
  return sorted((int(lab), np.asarray(img, np.uint8).tobytes()) for img, lab in zip(images, labels))


def assert_same(a, b):
  np.testing.assert_array_equal(a['image'], b['image'])
  np.testing.assert_array_equal(a['label'], b['label'])


def leftovers(data_dir: Path) -> list[str]:
  """Everything under data_dir, as relative paths."""
  if not data_dir.exists():
    return []
  return sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob('*'))


# -------------------------------------------------------------------------------------------- MNIST


def test_mnist_splits_match_the_idx_files(tmp_path):
  src_dir = fx.mnist_idx_dir(tmp_path, n_train=300, n_test=100)
  kw = dict(data_dir=tmp_path / 'tfds', source_dir=src_dir, download=False, validation_size=50)
  train, val, test = (sources.get_source('mnist', s, **kw) for s in SPLITS)
  assert (len(train), len(val), len(test)) == (250, 50, 100)
  ex = train[0]
  assert ex['image'].shape == (28, 28, 1) and ex['image'].dtype == np.uint8
  assert isinstance(ex['label'], int)
  assert sources.image_shape('mnist') == (28, 28, 1)

  a_train, a_val, a_test = (sources.load_arrays(s) for s in (train, val, test))
  full = arrays('mnist', 'train', **{**kw, 'validation_size': 0})
  # Validation is the end of the stored train order: train + validation == full, in order.
  np.testing.assert_array_equal(np.concatenate([a_train['image'], a_val['image']]), full['image'])
  np.testing.assert_array_equal(np.concatenate([a_train['label'], a_val['label']]), full['label'])
  digits, labels = fx.mnist_t10k()
  assert multiset(full['image'][..., 0], full['label']) == multiset(digits[:300], labels[:300])
  assert multiset(a_test['image'][..., 0], a_test['label']) == multiset(digits[300:400],
                                                                     labels[300:400])
  # The stored order mixes classes (TFDS orders by key hash), so a carved split is not one digit.
  assert len(set(a_val['label'].tolist())) > 5


def test_mnist_is_reused_and_deterministic(tmp_path):
  src_dir = fx.mnist_idx_dir(tmp_path, n_train=120, n_test=30)
  first = arrays('mnist', 'train', data_dir=tmp_path / 'a', source_dir=src_dir, download=False,
                 validation_size=20)
  info = tmp_path / 'a' / 'flax_cae_mnist' / '1.0.0' / 'dataset_info.json'
  mtime = info.stat().st_mtime_ns
  # Prepared data is reused: no source_dir, no download, same examples, nothing rewritten.
  again = arrays('mnist', 'train', data_dir=tmp_path / 'a', download=False, validation_size=20)
  assert_same(first, again)
  assert info.stat().st_mtime_ns == mtime
  # Gunzipped IDX files (torchvision keeps them so) prepared elsewhere give the same order.
  plain = tmp_path / 'plain'
  plain.mkdir()
  for f in src_dir.iterdir():
    (plain / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
  other = arrays('mnist', 'train', data_dir=tmp_path / 'b', source_dir=plain, download=False,
                 validation_size=20)
  assert_same(first, other)


# ----------------------------------------------------------------------------------------- CIFAR-10


def _cifar_batches(tarball: Path):
  with tarfile.open(tarball) as tar:
    def load(name):
      d = pickle.load(tar.extractfile(f'cifar-10-batches-py/{name}'), encoding='bytes')
      return d[b'data'].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.array(d[b'labels'])
    train = [load(f'data_batch_{i}') for i in range(1, 6)]
    return (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]),
            *load('test_batch'))


def test_cifar10_tarball_and_extracted_folder(tmp_path):
  tarball = fx.cifar_python_tarball(tmp_path, n_train_per_batch=20, n_test=30)
  kw = dict(data_dir=tmp_path / 'tfds', source_dir=tarball.parent, download=False,
            validation_size=10)
  train, val, test = (arrays('cifar10', s, **kw) for s in SPLITS)
  assert (len(train['label']), len(val['label']), len(test['label'])) == (90, 10, 30)
  assert train['image'].shape[1:] == (32, 32, 3) and train['image'].dtype == np.uint8
  x_train, y_train, x_test, y_test = _cifar_batches(tarball)
  got = multiset(np.concatenate([train['image'], val['image']]),
                 np.concatenate([train['label'], val['label']]))
  assert got == multiset(x_train, y_train)
  assert multiset(test['image'], test['label']) == multiset(x_test, y_test)

  # The extracted cifar-10-batches-py/ folder gives the very same splits, in the same order.
  extracted = tmp_path / 'extracted'
  with tarfile.open(tarball) as tar:
    tar.extractall(extracted, filter='data')
  kw2 = {**kw, 'data_dir': tmp_path / 'tfds2', 'source_dir': extracted}
  for split, want in zip(SPLITS, (train, val, test)):
    assert_same(arrays('cifar10', split, **kw2), want)


# ----------------------------------------------------------------------------------------- CINIC-10


def _decode_tree(root: Path, split: str):
  images, labels = [], []
  for label, cls in enumerate(fx.CIFAR10_CLASSES):
    for f in sorted((root / split / cls).iterdir()):
      with Image.open(f) as img:
        images.append(np.asarray(img.convert('RGB')))
      labels.append(label)
  return images, labels


def test_cinic10_folder_and_tarballs(tmp_path):
  root = fx.cinic_tree(tmp_path, per_class_per_split=2)
  modes = {Image.open(p).mode for p in root.rglob('n0*.png')}
  assert modes == {'L', 'RGBA'}  # the builder must convert both to RGB
  kw = dict(data_dir=tmp_path / 'tfds', source_dir=root.parent, download=False)
  want = {s: arrays('cinic10', s, **kw) for s in SPLITS}
  for split, folder in zip(SPLITS, ('train', 'valid', 'test')):
    got = want[split]
    assert got['image'].shape == (22, 32, 32, 3)
    assert multiset(got['image'], got['label']) == multiset(*_decode_tree(root, folder))

  # The same data from the folder itself and from tarballs with and without a top folder.
  tarball_dirs = []
  for top_level in (True, False):
    folder = tmp_path / f'tarball_top_level_{top_level}'
    folder.mkdir()
    fx.tar_folder(root, folder / 'CINIC-10.tar.gz', top_level=top_level)
    tarball_dirs.append(folder)
  for i, source_dir in enumerate((root, *tarball_dirs)):
    kw2 = dict(data_dir=tmp_path / f'tfds{i}', source_dir=source_dir, download=False)
    for split in SPLITS:
      assert_same(arrays('cinic10', split, **kw2), want[split])


# ------------------------------------------------------------------------------------- image folder


def test_image_folder_reads_every_image_once(tmp_path):
  root = fx.cifar_jpeg_tree(tmp_path, per_class=8)
  # Nested images count for their class; hidden files and folders are skipped.
  (root / 'ship' / 'more').mkdir()
  shutil.copy(root / 'ship' / '0000.jpg', root / 'ship' / 'more' / 'copy.jpg')
  (root / 'cat' / '.DS_Store').write_bytes(b'\x00not an image')
  (root / 'dog' / '.cache').mkdir()
  (root / 'dog' / '.cache' / 'junk.txt').write_text('junk')
  (root / '.thumbnails').mkdir()
  (root / '.thumbnails' / 'x.txt').write_text('junk')

  data_dir = tmp_path / 'tfds'
  kw = dict(data_dir=data_dir, source_dir=root, download=False, validation_size=10, test_size=5,
            image_size=(32, 32), channels=3)
  got = {s: arrays('image_folder', s, **kw) for s in SPLITS}
  assert [len(got[s]['label']) for s in SPLITS] == [66, 10, 5]
  files = sorted(p for p in root.rglob('*.jpg') if '.' not in p.parent.name)
  want_images, want_labels = [], []
  for f in files:
    want_images.append(fx.decode_rgb(f.read_bytes()))  # same libjpeg, same size: exact
    want_labels.append(fx.CIFAR10_CLASSES.index(f.relative_to(root).parts[0]))
  all_images = np.concatenate([got[s]['image'] for s in SPLITS])
  all_labels = np.concatenate([got[s]['label'] for s in SPLITS])
  assert multiset(all_images, all_labels) == multiset(want_images, want_labels)

  builder = sources.prepare('image_folder', **{k: v for k, v in kw.items()
                                                if k not in ('validation_size', 'test_size')})
  assert builder.builder_config.name.startswith('cifar10_jpeg_')
  assert builder.builder_config.name.endswith('_32x32x3')
  assert builder.info.features['label'].names == list(fx.CIFAR10_CLASSES)
  # Opening again gives the same carving (deterministic), from the same prepared files.
  assert_same(arrays('image_folder', 'validation', **kw), got['validation'])

  # Another size is another config, prepared next to the first.
  small = {**kw, 'image_size': (16, 24), 'channels': 1, 'validation_size': 0, 'test_size': 0}
  assert sources.image_shape('image_folder', **small) == (16, 24, 1)
  resized = arrays('image_folder', 'train', **small)
  assert resized['image'].shape == (81, 16, 24, 1)
  assert len(os.listdir(data_dir / 'flax_cae_image_folder')) == 2
  ref = np.stack([np.asarray(Image.fromarray(im).convert('L').resize(
      (24, 16), Image.Resampling.BICUBIC)) for im in want_images]).astype(float)
  # Resampling details may differ, the images must not: each stored image is close to
  # exactly one reference image of its own class.
  diff = np.abs(resized['image'][:, None, ..., 0] - ref[None]).mean(axis=(2, 3))
  diff[resized['label'][:, None] != np.array(want_labels)[None]] = np.inf
  assert diff.min(axis=1).max() < 2.0
  matched = ref[diff.argmin(axis=1)]  # as a multiset, every reference once (copies are equal)
  assert sorted(m.tobytes() for m in matched) == sorted(r.tobytes() for r in ref)


def test_image_folder_unreadable_file_names_it_and_leaves_nothing(tmp_path):
  data_dir = tmp_path / 'tfds'
  lfw = arrays('lfw_subset', 'train', data_dir=data_dir, validation_size=0)  # prepared before
  before = leftovers(data_dir)
  root = fx.cifar_jpeg_tree(tmp_path, per_class=2)
  bad = root / 'cat' / 'broken.jpg'  # an image by its name, not by its bytes
  bad.write_bytes((root / 'cat' / sorted(os.listdir(root / 'cat'))[0]).read_bytes()[:40])
  with pytest.raises(DataError) as e:
    sources.get_source('image_folder', 'train', data_dir=data_dir, source_dir=root,
                       validation_size=0, image_size=(32, 32), channels=3)
  msg = str(e.value)
  assert repr(str(bad)) in msg and 'remove it from the image folder' in msg
  assert leftovers(data_dir) == before  # no incomplete.*, no flax_cae_image_folder/
  assert_same(arrays('lfw_subset', 'train', data_dir=data_dir, validation_size=0), lfw)


def test_image_folder_needs_size_channels_and_folder(tmp_path):
  root = fx.cifar_jpeg_tree(tmp_path, per_class=1)
  kw = dict(data_dir=tmp_path / 'tfds', source_dir=root)
  with pytest.raises(ConfigError, match='image_size'):
    sources.get_source('image_folder', 'train', **kw)
  with pytest.raises(ConfigError, match='channels'):
    sources.get_source('image_folder', 'train', image_size=(8, 8), channels=4, **kw)
  with pytest.raises(ConfigError, match='source_dir'):
    sources.get_source('image_folder', 'train', data_dir=tmp_path / 'tfds', image_size=8,
                       channels=1)
  with pytest.raises(DataError, match='does not exist'):
    sources.get_source('image_folder', 'train', data_dir=tmp_path / 'tfds',
                       source_dir=tmp_path / 'nope', image_size=8, channels=1)
  assert leftovers(tmp_path / 'tfds') == []


# --------------------------------------------------------------------------------------- LFW subset


def test_lfw_subset_and_carving(tmp_path):
  import skimage.data
  kw = dict(data_dir=tmp_path / 'tfds', validation_size=20, test_size=30)
  got = {s: arrays('lfw_subset', s, **kw) for s in SPLITS}
  assert [len(got[s]['label']) for s in SPLITS] == [150, 20, 30]
  assert got['train']['image'].shape[1:] == (25, 25, 1)
  x = skimage.data.lfw_subset()
  want = np.round(x * 255).astype(np.uint8)
  labels = (np.arange(200) < 100).astype(int)  # the first 100 are faces
  images = np.concatenate([got[s]['image'] for s in SPLITS])[..., 0]
  all_labels = np.concatenate([got[s]['label'] for s in SPLITS])
  assert multiset(images, all_labels) == multiset(want, labels)  # disjoint, complete
  full = arrays('lfw_subset', 'train', data_dir=tmp_path / 'tfds', validation_size=0)
  np.testing.assert_array_equal(full['image'][..., 0], images)  # train | validation | test
  with pytest.raises(ConfigError, match='leave no training images'):
    sources.get_source('lfw_subset', 'train', data_dir=tmp_path / 'tfds', validation_size=150,
                       test_size=50)
  # An empty carved split is a valid, empty source that still knows its image shape.
  empty = sources.get_source('lfw_subset', 'test', data_dir=tmp_path / 'tfds', test_size=0,
                             validation_size=0)
  assert len(empty) == 0 and list(empty) == []
  assert sources.load_arrays(empty)['image'].shape == (0, 25, 25, 1)


def test_load_arrays_round_trip(tmp_path):
  src = sources.get_source('lfw_subset', 'validation', data_dir=tmp_path / 'tfds',
                           validation_size=40, test_size=10)
  idx = [5, 0, -1, 5, 39]
  out = sources.load_arrays(src, np.array(idx), chunk=2)
  assert out['image'].dtype == np.uint8 and out['label'].dtype == np.int32
  np.testing.assert_array_equal(out['image'], np.stack([src[i]['image'] for i in idx]))
  np.testing.assert_array_equal(out['label'], [src[i]['label'] for i in idx])
  # The direct record parser (taken, _fast) agrees with TFDS's decoder (via a plain list).
  assert_same(sources.load_arrays(src), sources.load_arrays(list(src)))
  assert src._fast is True
  assert src[-1]['label'] == src[39]['label']
  with pytest.raises(IndexError):
    src[40]
  with pytest.raises(IndexError):
    src.__getitems__([0, 40])
  assert sources.load_arrays(src, [])['image'].shape == (0, 25, 25, 1)


# ------------------------------------------------------------------------------------------- errors


def test_missing_files_name_file_url_and_source_dir(tmp_path):
  data_dir = tmp_path / 'tfds'
  with pytest.raises(DataError) as e:
    sources.get_source('mnist', 'train', data_dir=data_dir, download=False)
  msg = str(e.value)
  assert 'train-images-idx3-ubyte.gz' in msg and 't10k-labels-idx1-ubyte.gz' in msg
  assert builders.MNIST_URL in msg and '--config.data.source_dir=DIR' in msg
  assert msg.count('. ') == 0 and msg.endswith('.')  # one sentence

  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(DataError) as e:
    sources.get_source('cifar10', 'test', data_dir=data_dir, source_dir=empty)
  msg = str(e.value)
  assert 'cifar-10-python.tar.gz' in msg and builders.CIFAR10_URL in msg
  assert repr(str(empty)) in msg and 'source_dir' in msg
  assert leftovers(data_dir) == []


def test_failed_download_names_url_and_leaves_nothing(tmp_path, monkeypatch):
  def offline(self, url_or_urls):
    raise ConnectionError('no network in this test')
  monkeypatch.setattr(tfds.download.DownloadManager, 'download', offline)
  monkeypatch.setattr(sources, '_reachable', lambda url: True)  # the host answers, then fails
  data_dir = tmp_path / 'tfds'
  for fresh in (True, False):  # a new data_dir, then one holding a prepared data set
    if not fresh:
      arrays('lfw_subset', 'train', data_dir=data_dir, validation_size=0)
    before = leftovers(data_dir)
    with pytest.raises(DataError) as e:
      sources.get_source('cinic10', 'train', data_dir=data_dir, download=True)
    msg = str(e.value)
    assert 'CINIC-10.tar.gz' in msg and builders.CINIC10_URL in msg
    assert 'downloading failed' in msg and '--config.data.source_dir=DIR' in msg
    assert leftovers(data_dir) == before
    assert not (data_dir / 'flax_cae_cinic10').exists()


def test_unreachable_host_fails_fast_with_the_fix(tmp_path):
  # Port 1 on localhost is closed: the check must say so rather than let TFDS retry.
  assert not sources._reachable('http://127.0.0.1:1/cifar-10-python.tar.gz', timeout=2)
  data_dir = tmp_path / 'tfds'
  spec = sources.DATASETS['cifar10']
  original = spec.files
  object.__setattr__(spec, 'files', (builders.SourceFile(
      original[0].name, 'http://127.0.0.1:1/cifar-10-python.tar.gz'),))
  try:
    with pytest.raises(DataError, match=r'127\.0\.0\.1 cannot be reached from this machine.*'
                       r'--config\.data\.source_dir=DIR'):
      sources.get_source('cifar10', 'train', data_dir=data_dir, download=True)
  finally:
    object.__setattr__(spec, 'files', original)
  assert not data_dir.exists() or not any(data_dir.iterdir())


@pytest.fixture
def local_http(tmp_path, monkeypatch):
  """Serves a folder over HTTP on 127.0.0.1 (no internet) and yields its base URL."""
  monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
  monkeypatch.setenv('no_proxy', '127.0.0.1,localhost')
  served = tmp_path / 'served'
  served.mkdir()

  class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
      pass

  server = http.server.ThreadingHTTPServer(
      ('127.0.0.1', 0), functools.partial(Handler, directory=str(served)))
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield served, f'http://127.0.0.1:{server.server_address[1]}/'
  server.shutdown()
  server.server_close()


def test_download_through_tfds_without_checksums(tmp_path, monkeypatch, local_http):
  served, url = local_http
  src_dir = fx.mnist_idx_dir(tmp_path, n_train=40, n_test=10)
  for f in src_dir.iterdir():
    shutil.copy(f, served / f.name)
  files = tuple(builders.SourceFile(f.name, url + f.name) for f in builders.Mnist.SOURCE_FILES)
  # A 404 is a failed download: a DataError, and nothing left in data_dir.
  broken = files[:-1] + (builders.SourceFile(files[-1].name, url + 'missing.gz'),)
  for urls in (broken, files):
    monkeypatch.setattr(builders.Mnist, 'SOURCE_FILES', urls)
    monkeypatch.setitem(sources.DATASETS, 'mnist',
                        dataclasses.replace(sources.DATASETS['mnist'], files=urls))
    kw = dict(data_dir=tmp_path / 'tfds', download=True, validation_size=5)
    if urls is broken:
      with pytest.raises(DataError, match=r'downloading failed.*--config\.data\.source_dir=DIR'):
        sources.get_source('mnist', 'train', **kw)
      assert leftovers(tmp_path / 'tfds') == []
    else:  # TFDS's download manager fetches files whose checksums nobody registered
      want = arrays('mnist', 'train', data_dir=tmp_path / 'ref', source_dir=src_dir,
                    download=False, validation_size=5)
      assert_same(arrays('mnist', 'train', **kw), want)


def test_corrupt_source_file(tmp_path):
  src_dir = fx.mnist_idx_dir(tmp_path, n_train=20, n_test=10)
  (src_dir / 'train-labels-idx1-ubyte.gz').write_bytes(b'garbage')
  with pytest.raises(DataError, match='train-labels-idx1-ubyte.gz.*not a valid MNIST IDX file'):
    sources.get_source('mnist', 'train', data_dir=tmp_path / 'tfds', source_dir=src_dir,
                       validation_size=5)
  assert leftovers(tmp_path / 'tfds') == []


def test_unknown_names(tmp_path):
  with pytest.raises(ConfigError) as e:
    sources.get_source('mnsit', 'train', data_dir=tmp_path)
  for name in sources.dataset_names():
    assert name in str(e.value)
  assert sources.dataset_names() == ['cifar10', 'cinic10', 'colored_mnist', 'image_folder',
                                    'lfw', 'lfw_subset', 'mnist']
  with pytest.raises(ConfigError, match="'valid'"):
    sources.get_source('lfw_subset', 'valid', data_dir=tmp_path)
  with pytest.raises(ConfigError, match='validation_size'):
    sources.get_source('lfw_subset', 'train', data_dir=tmp_path, validation_size=-1)
  assert leftovers(tmp_path) == []


@pytest.mark.parametrize('fmt,mode,suffix', [
    (tarfile.PAX_FORMAT, 'w:gz', '.tar.gz'), (tarfile.GNU_FORMAT, 'w:bz2', '.tar.bz2'),
    (tarfile.GNU_FORMAT, 'w:xz', '.tar.xz'), (tarfile.USTAR_FORMAT, 'w', '.tar')])
def test_tar_reader_matches_tarfile(tmp_path, fmt, mode, suffix):
  # Long names take GNU 'L' records, pax 'path' records or the ustar prefix field.
  files = {'a.txt': b'x' * 10, 'p' * 90 + '/' + 'q' * 90 + '.png': b'z' * 513, 'empty': b'',
           'CINIC-10/train/cat/\u00fc.png': b'u' * 7}
  if fmt != tarfile.USTAR_FORMAT:
    files['d/' + 'long' * 40 + '/f.png'] = b'y' * 1000
  path = tmp_path / f'fmt{suffix}'
  with tarfile.open(path, mode, format=fmt) as tar:
    folder = tarfile.TarInfo('folder')
    folder.type = tarfile.DIRTYPE
    tar.addfile(folder)
    for name, data in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
    link = tarfile.TarInfo('link')
    link.type, link.linkname = tarfile.SYMTYPE, 'a.txt'
    tar.addfile(link)
  with tarfile.open(path) as tar:
    want = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
  assert [(n, read()) for n, read in builders.iter_tar_files(path)] == want
  assert [n for n, _ in builders.iter_tar_files(path)] == [n for n, _ in want]  # unread: skipped
