"""`python -m flax_cae.codec`: a PNG and a JPEG to .fcae files and back with a shipped model,
the numbers it prints checked against the files it wrote, and every bad input one sentence,
exit status 2, with nothing written."""

import csv
import pathlib
import re
import subprocess

import jax
import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

import flax_cae
from flax_cae import api
from flax_cae.evaluation import exported
from launching import run_module

MODEL = 'cifar10_improved'


def codec(*args) -> subprocess.CompletedProcess:
  return run_module('flax_cae.codec', *args)


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  """Two real photographs shipped with scikit-image: one as PNG, one as JPEG."""
  root = tmp_path_factory.mktemp('photos')
  Image.fromarray(skimage_data.coffee()[:96, :128]).save(root / 'coffee.png')
  Image.fromarray(skimage_data.chelsea()[50:120, 100:190]).save(root / 'chelsea.jpg', quality=90)
  return root


def _table(stdout: str) -> dict:
  rows = {}
  for line in stdout.splitlines():
    cells = [c.strip() for c in line.strip('|').split('|')]
    if len(cells) == 7 and cells[0].endswith(('.png', '.jpg')):
      rows[pathlib.Path(cells[0]).name] = cells
  return rows


def test_a_png_and_a_jpeg_go_to_files_and_back(photos, tmp_path):
  out = tmp_path / 'streams'
  r = codec('compress', f'--model={MODEL}', str(photos / 'coffee.png'), str(photos / 'chelsea.jpg'),
            f'--out={out}')
  assert r.returncode == 0, r.stderr[-3000:]
  rows = _table(r.stdout)
  assert set(rows) == {'coffee.png', 'chelsea.jpg'}
  model = flax_cae.load(MODEL)
  for name, stem, (h, w) in (('coffee.png', 'coffee', (96, 128)), ('chelsea.jpg', 'chelsea', (70, 90))):
    _, size, n_bytes, bpp, psnr, ssim, written = rows[name]
    stream = (out / f'{stem}.fcae').read_bytes()
    assert written == str(out / f'{stem}.fcae') and size == f'{w}x{h}'
    assert int(n_bytes.replace(',', '')) == len(stream)
    assert float(bpp) == pytest.approx(8 * len(stream) / (h * w), abs=1e-3)
    original = np.asarray(Image.open(photos / name).convert('RGB'))
    decoded = model.decompress(stream)
    mse = np.mean((decoded - original / 255.0) ** 2)
    assert float(psnr) == pytest.approx(10 * np.log10(1 / mse), abs=0.2)  # (mean of one image)
    assert 15 < float(psnr) < 40 and 0 < float(ssim) <= 1
  images = tmp_path / 'images'
  r = codec('decompress', f'--model={MODEL}', str(out / 'coffee.fcae'), str(out / 'chelsea.fcae'),
            f'--out={images}')
  assert r.returncode == 0, r.stderr[-3000:]
  assert sorted(p.name for p in images.iterdir()) == ['chelsea.png', 'coffee.png']
  png = np.asarray(Image.open(images / 'coffee.png'))
  expected = np.round(model.decompress((out / 'coffee.fcae').read_bytes()) * 255).astype(np.uint8)
  np.testing.assert_array_equal(png, expected)
  assert 'coffee.fcae -> ' in r.stdout and '(128x96)' in r.stdout


@pytest.fixture(scope='module')
def other_stream(tmp_path_factory):
  """A stream written by another model (the shipped model's float32 sibling: same network,
  its weights not rounded to float16), to be decoded with the shipped one."""
  trained, _ = exported.read(str(pathlib.Path(api.ZOO) / MODEL))
  trained.variables = dict(trained.variables, params=jax.tree.map(
      lambda a: a * np.float32(1.001), trained.variables['params']))
  other = flax_cae.Model(trained, flax_cae.load(MODEL).entropy_model)
  path = tmp_path_factory.mktemp('other') / 'other.fcae'
  path.write_bytes(other.compress(skimage_data.coffee()[:32, :32])[0])
  return path


@pytest.mark.parametrize('action,make,message', [
    ('compress', lambda d, o, p: (d / 'notes.png').write_text('not an image') and d / 'notes.png',
     'notes.png is not an image (PIL cannot identify it)'),
    ('compress', lambda d, o, p: d / 'missing.png', 'missing.png cannot be read (No such file'),
    ('decompress', lambda d, o, p: o, 'other.fcae was written by another model (fingerprint'),
    ('decompress', lambda d, o, p: (d / 'cut.fcae').write_bytes(o.read_bytes()[:-5]) and
     d / 'cut.fcae', 'cut.fcae is truncated or corrupted'),
    ('decompress', lambda d, o, p: p / 'chelsea.jpg', 'chelsea.jpg is not a flax-cae stream'),
])
def test_a_bad_input_is_one_sentence_and_nothing_is_written(photos, other_stream, tmp_path,
                                                            action, make, message):
  bad = make(tmp_path, other_stream, photos)
  good = photos / 'coffee.png'
  out = tmp_path / 'out'
  if action == 'compress':
    r = codec('compress', f'--model={MODEL}', str(good), str(bad), f'--out={out}')
  else:
    first = tmp_path / 'first'
    assert codec('compress', f'--model={MODEL}', str(good), f'--out={first}').returncode == 0
    r = codec('decompress', f'--model={MODEL}', str(first / 'coffee.fcae'), str(bad),
              f'--out={out}')
  assert r.returncode == 2, r.stderr[-3000:]
  line = r.stderr.strip().splitlines()[-1]
  assert line.startswith('flax-cae: error: ') and message in line, r.stderr[-2000:]
  assert 'Traceback' not in r.stderr
  assert not out.exists() or not list(out.iterdir())  # the good input's file was not written


@pytest.mark.parametrize('args,message', [
    (['compress', 'a.png', '--out=x'], '--model is required'),
    (['compress', f'--model={MODEL}', '--out=x'], 'compress needs at least one file'),
    (['squash', f'--model={MODEL}', 'a.png', '--out=x'], "'squash' is not an action"),
    (['compress', '--model=nowhere', 'a.png', '--out=x'], "'nowhere' is neither a folder"),
    (['compress', f'--model={MODEL}', 'a.png'], '--out is required'),
    (['compress', f'--model={MODEL}', '--step=0.3', 'a.png', '--out=x'], None),
])
def test_bad_arguments_are_one_sentence(photos, tmp_path, args, message):
  args = [a.replace('a.png', str(photos / 'coffee.png')).replace('--out=x', f'--out={tmp_path / "x"}')
          for a in args]
  r = codec(*args)
  assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
  line = r.stderr.strip().splitlines()[-1]
  assert re.match(r'flax-cae: error: ', line), r.stderr[-2000:]
  assert message is None or message in line, line
  if message is None:
    assert "quantizer step 0.3 is not one of this model's (0.5, 0.25, 0.125)" in line
  assert not (tmp_path / 'x').exists() or not list((tmp_path / 'x').iterdir())


def test_compare_puts_the_model_beside_jpeg_and_webp_at_no_more_bytes(photos, tmp_path):
  r = codec('compare', f'--model={MODEL}', str(photos / 'coffee.png'), f'--out={tmp_path}')
  assert r.returncode == 0, r.stderr[-3000:]
  rows = [[c.strip() for c in line.strip('|').split('|')] for line in r.stdout.splitlines()
          if line.startswith(f'| {photos / "coffee.png"}')]
  assert [row[2].split()[0] for row in rows] == ['flax-cae', 'JPEG', 'WebP']
  n_bytes = [int(row[3].replace(',', '')) for row in rows]
  assert n_bytes[1] <= n_bytes[0] and n_bytes[2] <= n_bytes[0]
  model = flax_cae.load(MODEL)
  assert n_bytes[0] == len(model.compress(np.asarray(Image.open(photos / 'coffee.png')))[0])
  picture = Image.open(tmp_path / 'coffee_compare.png')
  assert picture.format == 'PNG' and picture.width > 4 * 128
  with open(tmp_path / 'coffee_compare.csv') as f:
    table = list(csv.DictReader(f))
  assert [int(r['bytes']) for r in table] == n_bytes
  assert [r['codec'].split()[0] for r in table] == ['flax-cae', 'JPEG', 'WebP']
  for r, row in zip(table, rows):
    assert f'{float(r["psnr"]):.2f}' in row, (r, row)


def test_nothing_is_overwritten_and_odd_images_are_taken(photos, tmp_path):
  # Decompressing next to the original would replace it: refused, the original intact.
  here = tmp_path / 'here'
  here.mkdir()
  original = (photos / 'coffee.png').read_bytes()
  (here / 'coffee.png').write_bytes(original)
  assert codec('compress', f'--model={MODEL}', str(here / 'coffee.png'),
               f'--out={here}').returncode == 0
  r = codec('decompress', f'--model={MODEL}', str(here / 'coffee.fcae'), f'--out={here}')
  assert r.returncode == 2 and 'coffee.png exists already (it is never overwritten)' in r.stderr
  assert (here / 'coffee.png').read_bytes() == original
  # A 16-bit grey PNG is scaled to 8 bits (not clipped white), an 8x8 icon has no SSIM.
  ramp = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)
  Image.fromarray(ramp).save(tmp_path / 'ramp16.png')
  Image.fromarray(skimage_data.coffee()[:8, :8]).save(tmp_path / 'icon.png')
  r = codec('compress', f'--model={MODEL}', str(tmp_path / 'ramp16.png'),
            str(tmp_path / 'icon.png'), f'--out={tmp_path / "s"}')
  assert r.returncode == 0, r.stderr[-2000:]
  rows = _table(r.stdout)
  assert rows['icon.png'][5] == '–' and float(rows['ramp16.png'][4]) > 15
  decoded = flax_cae.load(MODEL).decompress((tmp_path / 's' / 'ramp16.fcae').read_bytes())
  assert abs(decoded.mean() - (ramp / 65535.0).mean()) < 0.05


@pytest.mark.parametrize('top', [200, 256, 1000, 65535])
def test_16_bit_pixels_are_scaled_by_their_depth_not_their_content(tmp_path, top):
  # A dark 16-bit image stays dark: its scale is the format's 0-65535, whatever it holds.
  from flax_cae.codec import __main__ as command  # pylint: disable=g-import-not-at-top
  ramp = np.linspace(0, top, 32 * 40).reshape(32, 40).astype(np.uint16)
  Image.fromarray(ramp).save(tmp_path / 'ramp16.png')
  read = command._read_image(str(tmp_path / 'ramp16.png'), 3)  # pylint: disable=protected-access
  assert read.shape == (32, 40, 3) and read.dtype == np.uint8
  assert int(read.max()) == round(top * 255 / 65535)
