"""The codec on the command line: images to .fcae files and back, with a trained model.

  python -m flax_cae.codec compress --model=NAME_OR_FOLDER a.png b.jpg --out=DIR [--step=S]
  python -m flax_cae.codec decompress --model=NAME_OR_FOLDER DIR/a.fcae DIR/b.fcae --out=DIR
  python -m flax_cae.codec compare --model=NAME_OR_FOLDER photo.png --out=DIR

`--model` is what `flax_cae.load` takes: a shipped model's name, an exported folder or a
launch.py workdir. compress writes DIR/<name>.fcae per image and prints its bytes, bits per
pixel, and PSNR and SSIM of its decoded image against the original; decompress writes
DIR/<name>.png; compare codes each image with the model, and with JPEG and WebP at the
highest quality whose file is no larger, and writes DIR/<name>_compare.png: the original and
the three decoded pictures side by side, bytes and PSNR under each (and the numbers in
DIR/<name>_compare.csv). Images are converted to
the model's channels (RGB, or grey for a grey model; alpha dropped). A file that is not an
image, cannot be read, or holds a stream of another model is one sentence and exit status
2; every input is read and coded before anything is written, and files are written whole or
not at all.

(This command sits in the codec folder for its name; it uses the public API, flax_cae/api.py.)
"""

import math
import os

import numpy as np

from flax_cae.runtime import cli
from flax_cae.runtime import console
from flax_cae.runtime.errors import ConfigError, UserError

ACTIONS = ('compress', 'decompress', 'compare')


def _read_image(path: str, channels: int) -> np.ndarray:
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as im:
      if im.mode.startswith('I'):  # 16-bit PNG or TIFF (PIL's I;16 or I): 0-65535 to 0-255
        wide = np.asarray(im).astype(np.float64)
        if wide.size and (wide.min() < 0 or wide.max() > 65535):
          raise ConfigError(f'{path} holds integer pixels outside 0-65535 ({wide.min():g} to '
                            f'{wide.max():g}); save it with 8 or 16-bit pixels.')
        im = Image.fromarray(np.round(wide * 255.0 / 65535.0).astype(np.uint8))
      elif im.mode == 'F':
        raise ConfigError(f'{path} holds floating-point pixels, whose range PIL does not say; '
                          'save it with 8 or 16-bit integers.')
      im = im.convert('L' if channels == 1 else 'RGB')
      return np.asarray(im, np.uint8).reshape(im.height, im.width, channels)
  except UnidentifiedImageError:
    raise ConfigError(f'{path} is not an image (PIL cannot identify it); give PNG, JPEG or '
                      'another format PIL reads.') from None
  except Image.DecompressionBombError as e:
    raise ConfigError(f'{path} is too large to read safely ({e}).') from None
  except OSError as e:
    raise ConfigError(f'{path} cannot be read ({e.strerror or e}).') from None


def _read_bytes(path: str) -> bytes:
  try:
    with open(path, 'rb') as f:
      return f.read()
  except OSError as e:
    raise ConfigError(f'{path} cannot be read ({e.strerror or e}).') from None


def _targets(paths: list[str], out: str, suffix: str) -> list[str]:
  """One output per input, DIR/<stem><suffix>; two inputs of one stem, and a file that is
  already there (never overwritten: it may be an original), are refused."""
  targets = [os.path.join(out, os.path.splitext(os.path.basename(p))[0] + suffix) for p in paths]
  seen = {}
  for p, t in zip(paths, targets):
    if t in seen:
      raise ConfigError(f'{seen[t]} and {p} would both be written to {t}; rename one, or '
                        'use different --out folders.')
    if os.path.exists(t):
      raise ConfigError(f'{t} exists already (it is never overwritten); choose another --out '
                        'folder, or remove it.')
    seen[t] = p
  return targets


def _write_all(files: dict[str, bytes]):
  """Writes every file whole (a temporary name, renamed) or, on a failure, none of them."""
  done, failed = [], None
  try:
    for path, data in files.items():
      failed = path
      os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
      with open(path + '.partial', 'wb') as f:
        f.write(data)
      os.replace(path + '.partial', path)
      done.append(path)
  except OSError as e:
    for written in done + [p + '.partial' for p in files]:
      try:
        os.remove(written)
      except OSError:
        pass
    raise ConfigError(f'{failed} cannot be written ({e.strerror or e}); nothing was written. '
                      'Choose an --out folder you can write to.') from None


def _png(image: np.ndarray) -> bytes:
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buf, 'PNG')
  return buf.getvalue()


def compress(model, paths: list[str], out: str, step) -> list[dict]:
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax_cae.measures import metrics  # pylint: disable=g-import-not-at-top
  targets = _targets(paths, out, '.fcae')
  images = [_read_image(p, model.image_shape[2]) for p in paths]
  streams = model.compress(images, step)
  rows, files = [], {}
  for path, target, image, stream in zip(paths, targets, images, streams):
    back = model.decompress(stream)
    h, w = image.shape[:2]
    ssim = math.nan  # (SSIM's 11x11 window needs an image at least that large)
    if min(h, w) >= metrics.SSIM_WINDOW:
      ssim = float(metrics.image_metrics(jnp.asarray(back[None]),
                                         jnp.asarray(image[None], jnp.float32) / 255)['ssim'][0])
    rows.append({'image': path, 'file': target, 'size': f'{w}x{h}', 'bytes': len(stream),
                 'bpp': 8 * len(stream) / (h * w), 'psnr': _psnr(back, image), 'ssim': ssim})
    files[target] = stream
  _write_all(files)
  return rows


def decompress(model, paths: list[str], out: str) -> list[dict]:
  targets = _targets(paths, out, '.png')
  images = model.decompress([_read_bytes(p) for p in paths], names=paths)
  files = {t: _png(image) for t, image in zip(targets, images)}
  _write_all(files)
  return [{'stream': p, 'file': t, 'size': f'{im.shape[1]}x{im.shape[0]}'}
          for p, t, im in zip(paths, targets, images)]


def _psnr(decoded: np.ndarray, image_u8: np.ndarray) -> float:
  mse = float(np.mean((np.asarray(decoded, np.float64) - image_u8 / 255.0) ** 2))
  return 10 * np.log10(1.0 / mse) if mse > 0 else float('inf')


def compare(model, paths: list[str], out: str, step) -> list[dict]:
  """The model's stream, and JPEG's and WebP's files of at most as many bytes, per image."""
  from flax_cae.codec import classical  # pylint: disable=g-import-not-at-top
  targets = _targets(paths, out, '_compare.png')
  _targets(paths, out, '_compare.csv')  # refused likewise if already there
  rows, files = [], {}
  for path, target in zip(paths, targets):
    image = _read_image(path, model.image_shape[2])
    stream = model.compress(image, step)[0]
    panels = [('original', image / 255.0, None, None),
              (f'flax-cae {model.config.model.name}', model.decompress(stream), len(stream), None)]
    for codec in classical.CODECS:
      quality, data = classical.at_most(codec, image, len(stream))
      panels.append((f'{"JPEG" if codec == "jpeg" else "WebP"} q{quality}',
                     classical.decode(data, image.shape[-1]) / 255.0, len(data), quality))
    row = {'image': path, 'file': target, 'size': f'{image.shape[1]}x{image.shape[0]}',
           'codecs': [{'codec': name, 'bytes': n, 'psnr': _psnr(pic, image), 'quality': q}
                      for name, pic, n, q in panels[1:]]}
    files[target] = _figure(panels, image)
    files[target[:-len('.png')] + '.csv'] = _compare_csv(row['codecs'], image)
    rows.append(row)
  _write_all(files)
  return rows


def _compare_csv(codecs: list[dict], image) -> bytes:
  """The comparison's numbers, a row per codec, for tables made from them."""
  pixels = image.shape[0] * image.shape[1]
  lines = ['codec,quality,bytes,bpp,psnr']
  for c in codecs:
    lines.append(f'{c["codec"]},{c["quality"] if c["quality"] is not None else ""},{c["bytes"]},'
                 f'{8 * c["bytes"] / pixels!r},{float(c["psnr"])!r}')
  return ('\n'.join(lines) + '\n').encode()


def _figure(panels, image) -> bytes:
  import io  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  h, w = image.shape[:2]
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4 * h / w + 0.8))
  for ax, (name, pic, n, _) in zip(axes, panels):
    ax.imshow(np.clip(pic, 0, 1)[..., 0] if pic.shape[-1] == 1 else np.clip(pic, 0, 1),
              cmap='gray' if pic.shape[-1] == 1 else None, vmin=0, vmax=1,
              interpolation='nearest')
    ax.set_axis_off()
    ax.set_title(name, fontsize=10)
    if n is not None:
      ax.text(0.5, -0.03, f'{n:,} bytes ({8 * n / (h * w):.3f} bpp)\n'
              f'PSNR {_psnr(pic, image):.2f} dB', transform=ax.transAxes, ha='center',
              va='top', fontsize=9)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=100)
  plt.close(fig)
  return buf.getvalue()


def run(action: str, model_name: str, paths: list[str], out: str, step=None) -> list[dict]:
  """The command's work, as a function (tests call it); a bad input is a UserError."""
  from flax_cae import api  # pylint: disable=g-import-not-at-top
  if action not in ACTIONS:
    raise ConfigError(f'{action!r} is not an action; use python -m flax_cae.codec compress '
                      '--model=NAME a.png --out=DIR, decompress --model=NAME a.fcae --out=DIR, '
                      'or compare --model=NAME a.png --out=DIR.')
  if not model_name:
    shipped = ', '.join(api.shipped_models()) or 'none installed'
    raise ConfigError(f'--model is required: a shipped model ({shipped}), an exported folder '
                      'or a launch.py workdir.')
  if not paths:
    raise ConfigError(f'{action} needs at least one file, e.g. python -m flax_cae.codec {action} '
                      f'--model={model_name} {"a.fcae" if action == "decompress" else "a.png"} '
                      '--out=DIR.')
  if not out:
    what = 'streams' if action == 'compress' else 'images'
    raise ConfigError(f'--out is required: the folder the {what} go to.')
  if os.path.exists(out) and not os.path.isdir(out):
    raise ConfigError(f'--out={out} is a file; give a folder.')
  try:
    model = api.load(model_name)
    if action == 'compress':
      return compress(model, paths, out, step)
    if action == 'compare':
      return compare(model, paths, out, step)
    return decompress(model, paths, out)
  except ValueError as e:
    if isinstance(e, UserError):
      raise
    raise ConfigError(str(e)) from None


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  console.setup()
  f = flags.FLAGS
  try:
    if len(argv) < 2:
      raise ConfigError('say what to do: python -m flax_cae.codec compress --model=NAME a.png '
                        '--out=DIR, or decompress --model=NAME a.fcae --out=DIR.')
    rows = run(argv[1], f.model, argv[2:], f.out, f.step)
  except UserError as e:
    cli.fail(str(e))
  if argv[1] == 'compress':
    print('| image | size | bytes | bpp | PSNR (dB) | SSIM | written |\n'
          '|---|---|---|---|---|---|---|')
    for r in rows:
      ssim = '–' if math.isnan(r['ssim']) else f"{r['ssim']:.4f}"
      print(f"| {r['image']} | {r['size']} | {r['bytes']:,} | {r['bpp']:.3f} | {r['psnr']:.2f} | "
            f"{ssim} | {r['file']} |")
  elif argv[1] == 'compare':
    print('| image | size | codec | bytes | bpp | PSNR (dB) |\n|---|---|---|---|---|---|')
    for r in rows:
      w, h = map(int, r['size'].split('x'))
      for c in r['codecs']:
        print(f"| {r['image']} | {r['size']} | {c['codec']} | {c['bytes']:,} | "
              f"{8 * c['bytes'] / (h * w):.3f} | {c['psnr']:.2f} |")
      print(f"\n{r['file']}")
  else:
    for r in rows:
      print(f"{r['stream']} -> {r['file']} ({r['size']})")


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('model', None, 'A shipped model name, an exported folder or a workdir.')
  flags.DEFINE_string('out', None, 'The folder the .fcae files (compress) or PNGs go to.')
  flags.DEFINE_float('step', None, "The quantizer step (compress; default: the model's finest).")
  app.run(main, flags_parser=cli.parse_flags)
