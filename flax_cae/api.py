"""The library's public face: `flax_cae.load(...)` gives a trained model to use.

  import flax_cae
  model = flax_cae.load('cifar10_best256')          # a shipped model, an export or a workdir
  out = model.reconstruct(images)                   # float32 [N, H, W, C] in [0, 1]
  streams = model.compress(images)                  # list of bytes, one .fcae stream per image
  back = model.decompress(streams)                  # the images, decoded from those bytes

Images are uint8 `[N, H, W, C]` or `[H, W, C]`, or floats in [0, 1] of the same shapes; a
single image gives a single result, except `compress`, which always returns a list of
streams (`decompress` takes one stream or a list). `reconstruct`, `compress` and `decompress` take any
size (evaluation/layout.py: a fully convolutional model pads, one of a fixed size tiles;
`describe()` says which); `encode` and `decode` take the sizes the network itself takes.
Anything else is one sentence (`ValueError`) naming what was given and what is accepted.
Work runs in batches of at most `BATCH` images (fewer for large ones), each shape compiled
once, so a whole test set fits in memory.
"""

import functools
import math
import os
from typing import Any

import jax
import numpy as np

from flax_cae import models
from flax_cae.codec import container
from flax_cae.codec import entropy
from flax_cae.evaluation import exported
from flax_cae.evaluation import layout as layout_lib
from flax_cae.evaluation import trained as trained_lib

BATCH = 256
BATCH_PIXELS = BATCH * 32 * 32  # a batch of large images holds about as many pixels
ZOO = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'zoo')


class Model:
  """A trained model, loaded read-only (`load`): its config, bottleneck, test results, and
  `encode`, `decode`, `reconstruct`, `compress`, `decompress` (autoencoders) or `predict`
  (classifiers).

  Attributes:
    config: the run's config (ml_collections.ConfigDict), as trained.
    results: its results.json: test metrics, the kept step, the codec's figures.
    task: 'reconstruction', 'variational', 'rate_distortion' or 'classification'.
    image_shape: (height, width, channels) it was trained on.
    bottleneck: what passes from encoder to decoder (`floats`, `parts`,
      `compression_ratio`); None for a classifier.
    entropy_model: its codec's tables (flax_cae.codec.entropy.EntropyModel); None where it
      does not compress or has none.
    info: an exported or shipped model's record (model.json: how, where and when it was
      trained and exported); None for a workdir.
  """

  def __init__(self, trained: trained_lib.Trained, entropy_model=None, source: str = '',
               info: dict | None = None):
    self._trained = trained
    self.info = info  # an exported or shipped model's model.json (provenance); None for a workdir
    self._source = source or trained.workdir
    self.config = trained.config
    self.results = trained.results
    self.task = trained.task
    self.image_shape = tuple(int(d) for d in trained.results['image_shape'])
    self.bottleneck = models.bottleneck(trained.model)
    self.entropy_model = entropy_model  # codec/entropy.py; None: the model does not compress
    self._by_size = {}  # (h, w) -> the network built for that input size

  def describe(self) -> str:
    """One paragraph: the model, the images it takes, its code and its test numbers."""
    r = self.results
    h, w, c = self.image_shape
    scores = ', '.join(f'{k[len("test_"):]} {r[k]:.4g}' for k in
                       ('test_psnr', 'test_ssim', 'test_accuracy') if r.get(k) is not None)
    if self.task == 'classification':
      sizes = f'takes {h}x{w} images with {c} channel(s)'
    elif self._stride:
      sizes = (f'fully convolutional: takes images of any size with {c} channel(s), padded by '
               f'reflection to a multiple of {self._stride} pixels and cropped back (trained '
               f'on {h}x{w}; over {layout_lib.MAX_SIDE} pixels a side, in tiles)')
    else:
      sizes = (f'takes {h}x{w} images with {c} channel(s); larger or smaller ones are cut into '
               f'{h}x{w} tiles (padded by reflection), each coded on its own')
    codec = ''
    if self.entropy_model is not None:
      tables = 'its learned density' if self.entropy_model.learned else 'per-channel tables'
      codec = (f'; compresses with {tables} '
               f'(quantizer steps {", ".join(f"{s:g}" for s in self.entropy_model.steps)}, '
               f'default {self.entropy_model.default_step:g})')
      if r.get('codec_bpp') is not None:
        codec += f": {r['codec_bpp']:.3f} bpp at {r['codec_psnr']:.2f} dB on its test images"
    return (f'{self.config.model.name} ({self.task}) trained on {self.config.data.name}; '
            f'{sizes}, uint8 or floats in [0, 1]; {models.describe_bottleneck(self.bottleneck)}'
            + codec + (f'; test: {scores}' if scores else '') + '.')

  def __repr__(self) -> str:
    return f'flax_cae.load({self._source!r})'

  # --- inputs and sizes ---------------------------------------------------------------

  def _images(self, images, any_size: bool) -> tuple[np.ndarray, bool]:
    """(uint8 [N, H, W, C], whether one image was given) or one ValueError sentence."""
    x = np.asarray(images)
    single = x.ndim == 3
    if single:
      x = x[None]
    h, w, c = self.image_shape
    if x.ndim != 4:
      raise ValueError(f'images must be [N, H, W, C] or [H, W, C], got an array of shape '
                       f'{x.shape}; this model takes {h}x{w}x{c}.')
    if x.shape[-1] != c:
      raise ValueError(f'images have {x.shape[-1]} channel(s) (shape {x.shape[1:]}), this model '
                       f'takes {c}; give H x W x {c} images.')
    if min(x.shape[1:3]) < 1:
      raise ValueError(f'images of {x.shape[1]}x{x.shape[2]} pixels hold nothing to code.')
    if not any_size and x.shape[1:3] != (h, w):
      s = self._stride
      if not s:
        hint = ('' if self.task == 'classification' else
                ', or use reconstruct, compress and decompress, which tile any size')
        raise ValueError(f'images are {x.shape[1]}x{x.shape[2]}, this model\'s network takes '
                         f'{h}x{w} (its training size); resize them{hint}.')
      if x.shape[1] % s or x.shape[2] % s:
        raise ValueError(f'images are {x.shape[1]}x{x.shape[2]}; this network takes sizes that '
                         f'are multiples of {s}; pad them, or use reconstruct, compress and '
                         'decompress, which pad any size.')
      if (x.shape[1] // s, x.shape[2] // s) == next(iter(self._code_shapes.values()))[:2]:
        # (decode could not tell their codes from those of training-size images)
        raise ValueError(f'images of {x.shape[1]}x{x.shape[2]} give codes of the same grid as '
                         f'the training size {h}x{w}, which decode takes them for; encode '
                         f'{h}x{w} images or another multiple of {s}, or use reconstruct, '
                         'compress and decompress, which take any size.')
    if x.dtype == np.uint8:
      return x, single
    if not np.issubdtype(x.dtype, np.floating):
      raise ValueError(f'images must be uint8 or floats in [0, 1], got dtype {x.dtype}.')
    if not np.isfinite(x).all():
      raise ValueError('float images hold NaN or infinite values; give floats in [0, 1] or '
                       'uint8 pixels.')
    if x.size and not (x.min() >= 0.0 and x.max() <= 1.0):
      raise ValueError(f'float images must lie in [0, 1], got values from {x.min():g} to '
                       f'{x.max():g}; divide uint8 pixels by 255, or pass them as uint8.')
    return np.round(x * 255.0).astype(np.uint8), single

  def _at(self, h: int, w: int) -> trained_lib.Trained:
    """The trained model built for h x w inputs (same parameters)."""
    if (h, w) == self.image_shape[:2]:
      return self._trained
    return self._sized(h, w)

  def _sized(self, h: int, w: int) -> trained_lib.Trained:
    if (h, w) not in self._by_size:  # (each size compiles its own programs once)
      self._by_size[h, w] = self._build(h, w)
    return self._by_size[h, w]

  def _build(self, h: int, w: int) -> trained_lib.Trained:
    t = self._trained
    config = t.config.model.copy_and_resolve_references()
    code, s = self._code_shapes.get('latent', ()), self._grid_stride
    if s and config.get('latent_dim') == math.prod(code):
      # A spatial code of latent_dim floats: as many channels on a larger grid.
      config.latent_dim = code[2] * -(-h // s) * -(-w // s)
    model = models.build_model(config, (h, w, self.image_shape[2]),
                               (t.results.get('model_options') or {}).get('num_classes') or 10)
    return trained_lib.Trained(t.workdir, t.config, t.results, model, t.variables)

  @functools.cached_property
  def _grid_stride(self) -> int | None:
    """The power of two s whose 'same'-padded grid ceil(H / s) x ceil(W / s) is the code's,
    where the code is one map on the image's grid (a candidate; `_stride` checks it)."""
    if self.task == 'classification' or set(self._code_shapes) != {'latent'}:
      return None
    (h, w, _), code = self.image_shape, self._code_shapes['latent']
    if len(code) != 3:
      return None
    return next((s for s in (2 ** k for k in range(8))
                 if (-(-h // s), -(-w // s)) == code[:2]), None)

  @functools.cached_property
  def _stride(self) -> int | None:
    """Pixels per code cell of a fully convolutional model: one whose parameters do not depend
    on the image size and whose code is a map on the image's grid. None for a model of one
    size."""
    s = self._grid_stride
    if not s:
      return None
    (_, _, c), code = self.image_shape, self._code_shapes['latent']
    big = self._sized(2 * s * code[0], 2 * s * code[1])
    x = jax.ShapeDtypeStruct((1, 2 * s * code[0], 2 * s * code[1], c), np.uint8)
    try:
      shapes = jax.eval_shape(lambda x: big.model.init(
          {'params': jax.random.key(0), 'dropout': jax.random.key(0)}, x / 255.0), x)
      codes = jax.eval_shape(lambda x: big.encode(big.variables, x), x)
    except Exception:  # pylint: disable=broad-except  (a model that cannot grow: tile it)
      return None
    same = (jax.tree.map(np.shape, shapes['params'])
            == jax.tree.map(np.shape, self._trained.variables['params']))
    return s if same and codes['latent'].shape[1:3] == (2 * code[0], 2 * code[1]) else None

  def _layout(self, h: int, w: int) -> layout_lib.Layout:
    return layout_lib.plan((h, w), self.image_shape[:2], self._stride)

  def _batched(self, fn, x, batch: int = BATCH) -> Any:
    """fn over x (an array, or a dict of arrays, of N rows) in batches of `batch`, the last
    one padded so every call has one compiled shape; the outputs joined, N rows again. (One
    shape per image size also means an image's output does not depend on how many others
    came with it: XLA's results may differ in the last bit between batch sizes.)"""
    n = len(jax.tree.leaves(x)[0])
    outs = []
    for start in range(0, max(n, 1), batch):
      rows = min(batch, n - start)
      chunk = jax.tree.map(lambda a: np.concatenate(
          [a[start:start + rows], np.zeros((batch - rows, *a.shape[1:]), a.dtype)]), x)
      outs.append(jax.tree.map(lambda a: np.asarray(a)[:rows], fn(chunk)))
    return jax.tree.map(lambda *a: np.concatenate(a), *outs)

  def _batch(self, lay: layout_lib.Layout) -> int:
    th, tw = lay.tile
    return max(1, min(BATCH, BATCH_PIXELS // (th * tw)))

  def _need(self, classifier: bool, what: str):
    """A ValueError sentence where the model's task cannot do `what`."""
    if (self.task == 'classification') == classifier:
      return
    name = self.config.model.name
    if classifier:
      raise ValueError(f'{name} is a {self.task} model, not a classifier; {what} needs a '
                       'classifier (e.g. a configs/cifar10_lenet5.py run).')
    raise ValueError(f'{name} is a {self.task} model, which has no {what}; load an '
                     'autoencoder for it.')

  @functools.cached_property
  def _code_shapes(self) -> dict:
    """{part: shape of one image's code}, as encode returns them (no FLOPs spent)."""
    return self._code_shapes_at(*self.image_shape[:2])

  def _code_shapes_at(self, h: int, w: int) -> dict:
    t = self._at(h, w)
    codes = jax.eval_shape(lambda x: t.encode(t.variables, x),
                           jax.ShapeDtypeStruct((1, h, w, self.image_shape[2]), np.uint8))
    return {k: tuple(v.shape[1:]) for k, v in codes.items()}

  # --- what a model does ----------------------------------------------------------------

  def encode(self, images) -> dict:
    """The code of each image: {'latent': float32 [N, ...]} (every part the decoder sees)."""
    self._need(False, what='code')
    x, single = self._images(images, any_size=False)
    t = self._at(*x.shape[1:3])
    codes = self._batched(lambda b: t.encode(t.variables, b), x,
                          self._batch(self._layout(*x.shape[1:3])))
    return jax.tree.map(lambda a: a[0], codes) if single else codes

  def decode(self, codes: dict) -> np.ndarray:
    """Images (float32 in [0, 1]) from codes as `encode` returns them."""
    self._need(False, what='decoder')
    want = self._code_shapes
    if not isinstance(codes, dict) or set(codes) != set(want):
      raise ValueError(f'codes must be a dict with the parts {sorted(want)} (as encode returns '
                       f'them), got {type(codes).__name__}'
                       + (f' with {sorted(codes)}' if isinstance(codes, dict) else '') + '.')
    arrays = {k: np.asarray(v, np.float32) for k, v in codes.items()}
    part = next(iter(want))
    single = arrays[part].ndim == len(want[part])
    if single:
      arrays = {k: v[None] for k, v in arrays.items()}
    h, w = self.image_shape[:2]
    got = arrays[part].shape[1:]
    if self._stride and got != want[part] and len(got) == 3 and got[2] == want[part][2]:
      h, w = got[0] * self._stride, got[1] * self._stride  # a larger image's code
      want = self._code_shapes_at(h, w)
    for k, v in arrays.items():
      if v.shape[1:] != want[k]:
        raise ValueError(f'codes[{k!r}] has shape {v.shape[1:]} per image, this model\'s is '
                         f'{want[k]}' + (' (or the same channels on a larger grid)'
                                         if self._stride else '') + '.')
    t = self._at(h, w)
    images = self._batched(lambda b: t.decode(t.variables, b), arrays,
                           self._batch(self._layout(h, w)))
    return images[0] if single else images

  def reconstruct(self, images) -> np.ndarray:
    """The model's output for each image, of any size: float32 [N, H, W, C] in [0, 1] (a
    list of [H, W, C] images of different sizes gives a list)."""
    self._need(False, what='reconstruction')
    if _sizes_differ(images):
      return [self.reconstruct(image) for image in images]
    x, single = self._images(images, any_size=True)
    lay = self._layout(*x.shape[1:3])
    t = self._at(*lay.tile)
    out = lay.merge(self._batched(t.reconstruct, lay.split(x), self._batch(lay)))
    return out[0] if single else out

  def predict(self, images) -> np.ndarray:
    """A classifier's class index for each image (int [N])."""
    self._need(True, what='predict')
    x, single = self._images(images, any_size=False)
    t = self._trained
    logits = self._batched(lambda b: t.apply(t.variables, b)['logits'], x)
    labels = np.argmax(logits, axis=-1)
    return labels[0] if single else labels

  # --- the codec ------------------------------------------------------------------------

  def _codec(self, step):
    if not entropy.compresses(self.task, self.bottleneck):
      raise ValueError(f'{self.config.model.name} here does not compress (its code is not one '
                       'array smaller than the image), so it has no codec; load a model that '
                       'compresses.')
    if self.entropy_model is None:
      raise ValueError(f'{self._source} has no entropy model ({entropy.ENTROPY_FILE}: runs '
                       'fit one when they finish); python -m flax_cae.export '
                       '--workdir=THAT_WORKDIR --out=DIR fits one from its training images into '
                       'the exported model, which load(DIR) reads.')
    return self.entropy_model.table(step)

  @functools.cached_property
  def fingerprint(self) -> bytes:
    """What a stream's header names: a hash of the parameters and the entropy model."""
    return container.fingerprint(*jax.tree.leaves(self._trained.variables),
                                 *(self.entropy_model.arrays() if self.entropy_model else []))

  def compress(self, images, step: float | None = None) -> list[bytes]:
    """A list of one .fcae stream per image, a single image included (codec/container.py:
    a 20-byte header, then the range coder's bytes), of any size; `step`: the quantizer step, one of the entropy model's
    (default: its finest). A list of [H, W, C] images of different sizes is taken too."""
    self._need(False, what='codec')
    table = self._codec(step)
    if _sizes_differ(images):
      return [s for image in images for s in self.compress(image, step)]
    x, _ = self._images(images, any_size=True)
    n, h, w, c = x.shape
    lay = self._layout(h, w)
    t = self._at(*lay.tile)
    codes = self._batched(lambda b: t.encode(t.variables, b)['latent'], lay.split(x),
                          self._batch(lay))
    codes = np.asarray(codes, np.float32).reshape(n, lay.tiles, *codes.shape[1:])
    step = float(np.float32(step if step is not None else self.entropy_model.default_step))
    return [container.write(container.Stream(self.fingerprint, (h, w, c), step,
                                             table.encode(table.quantize(code))))
            for code in codes]

  def decompress(self, streams, names=None) -> np.ndarray | list[np.ndarray]:
    """The images (float32 in [0, 1]) decoded from streams that `compress` wrote: one stream
    (bytes) gives [H, W, C]; a list gives [N, H, W, C] (a list of arrays where sizes differ).
    A stream of another model, truncated or corrupted, is one ValueError sentence; `names`
    (e.g. file names) say which one."""
    self._need(False, what='codec')
    single = isinstance(streams, (bytes, bytearray, memoryview))
    streams = [streams] if single else list(streams) if isinstance(streams, (list, tuple)) else None
    if streams is None or not all(isinstance(s, (bytes, bytearray, memoryview)) for s in streams):
      raise ValueError('decompress takes bytes (one stream) or a list of bytes, as compress '
                       'returns them; read a .fcae file with open(path, "rb").read().')
    names = list(names) if names is not None else [f'stream {i}' for i in range(len(streams))]
    if len(names) != len(streams):
      raise ValueError(f'{len(names)} names for {len(streams)} streams; give one name each.')
    self._codec(None)
    read = [container.read(s, self.fingerprint, name) for s, name in zip(streams, names)]
    out = [None] * len(read)
    by_size = {}
    for i, s in enumerate(read):
      by_size.setdefault(s.image_shape, []).append(i)
    for (h, w, c), rows in by_size.items():
      if c != self.image_shape[2]:  # (only a stream forged with this model's fingerprint)
        raise ValueError(f'{names[rows[0]]} holds a {c}-channel image, this model codes '
                         f'{self.image_shape[2]}.')
      lay = self._layout(h, w)
      code_shape = self._code_shapes_at(*lay.tile)['latent']
      codes = []
      for i in rows:
        table = self._codec(read[i].step)
        try:
          symbols = table.decode(read[i].payload, (lay.tiles, *code_shape))
        except Exception as e:  # pylint: disable=broad-except  (a forged, CRC-valid payload)
          raise ValueError(f'{names[i]} does not decode ({e}); compress the image again.'
                           ) from None
        codes.append(table.dequantize(symbols))
      t = self._at(*lay.tile)
      tiles = self._batched(lambda b: t.decode(t.variables, {'latent': b}),
                            np.concatenate(codes), self._batch(lay))
      for i, image in zip(rows, lay.merge(tiles)):
        out[i] = image
    if single:
      return out[0]
    return np.stack(out) if len(by_size) == 1 else out


def _sizes_differ(images) -> bool:
  """Whether `images` is a list of images of different sizes (each then runs alone)."""
  return isinstance(images, (list, tuple)) and len({np.shape(i) for i in images}) > 1


def shipped_models() -> list[str]:
  """The names of the trained models that come with the package (`load(name)`)."""
  if not os.path.isdir(ZOO):
    return []
  return sorted(n for n in os.listdir(ZOO) if exported.is_export(os.path.join(ZOO, n)))


def load(name_or_path: str) -> Model:
  """A trained model, read-only, from a launch.py workdir (the checkpoint its results.json
  reports; of a run still training, its best so far, with a warning), a folder that
  `python -m flax_cae.export` wrote, or the name of a shipped model (`shipped_models()`)."""
  path = os.path.abspath(os.path.expanduser(str(name_or_path)))
  if os.path.isdir(path):
    if exported.is_export(path):
      trained, info = exported.read(path)
      return Model(trained, exported.entropy_model_of(path), str(name_or_path), info)
    trained = trained_lib.load_trained(path)
    return Model(trained, exported.entropy_model_of(path, int(trained.results['best_step'])),
                 str(name_or_path), None)
  shipped = shipped_models()
  if name_or_path in shipped:
    folder = os.path.join(ZOO, name_or_path)
    trained, info = exported.read(folder)
    return Model(trained, exported.entropy_model_of(folder), name_or_path, info)
  raise ValueError(f'{name_or_path!r} is neither a folder (a launch.py workdir or an exported '
                   f'model) nor a shipped model ({", ".join(shipped) or "none installed"}).')
