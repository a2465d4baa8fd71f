"""The library's public face: `flax_cae.load(workdir)` gives a trained model to use.

  import flax_cae
  model = flax_cae.load('workdirs/default')        # a finished (or training) workdir
  codes = model.encode(images)                      # {'latent': float32 [N, ...]}
  out = model.reconstruct(images)                   # float32 [N, H, W, C] in [0, 1]

Images are uint8 `[N, H, W, C]` or `[H, W, C]`, or floats in [0, 1] of the same shapes; a
single image gives a single result. Anything else is one sentence (`ValueError`) naming what
was given and what the model takes. Work runs in batches of `BATCH` images, each compiled
once, so a whole test set fits in memory.
"""

import functools
from typing import Any

import jax
import numpy as np

from flax_cae import models
from flax_cae.evaluation import trained as trained_lib

BATCH = 256


class Model:
  """A trained model, loaded read-only (`load`): its config, bottleneck, test results, and
  `encode`, `decode`, `reconstruct` (autoencoders) or `predict` (classifiers)."""

  def __init__(self, trained: trained_lib.Trained):
    self._trained = trained
    self.config = trained.config
    self.results = trained.results
    self.task = trained.task
    self.image_shape = tuple(int(d) for d in trained.results['image_shape'])
    self.bottleneck = models.bottleneck(trained.model)

  def describe(self) -> str:
    """One paragraph: the model, what it takes, its code and its test numbers."""
    r = self.results
    h, w, c = self.image_shape
    scores = ', '.join(f'{k[len("test_"):]} {r[k]:.4g}' for k in
                       ('test_psnr', 'test_ssim', 'test_accuracy') if r.get(k) is not None)
    return (f'{self.config.model.name} ({self.task}) trained on {self.config.data.name}; takes '
            f'{h}x{w} images with {c} channel(s), uint8 or floats in [0, 1]; '
            f'{models.describe_bottleneck(self.bottleneck)}'
            + (f'; test: {scores}' if scores else '') + '.')

  def __repr__(self) -> str:
    return f'flax_cae.Model({self._trained.workdir!r})'

  # --- inputs -------------------------------------------------------------------------

  def _images(self, images) -> tuple[np.ndarray, bool]:
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
                       f'takes {c}; give {h}x{w}x{c} images.')
    if x.shape[1:3] != (h, w):
      raise ValueError(f'images are {x.shape[1]}x{x.shape[2]}, this model takes {h}x{w} '
                       f'(its training size); resize them to {h}x{w}.')
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

  def _batched(self, fn, x) -> Any:
    """fn over x (an array, or a dict of arrays, of N rows) in batches of BATCH, the last one
    padded so every call has one compiled shape; the outputs joined, N rows again."""
    n = len(jax.tree.leaves(x)[0])
    outs = []
    for start in range(0, max(n, 1), BATCH):
      rows = min(BATCH, n - start)
      chunk = jax.tree.map(lambda a: np.concatenate(
          [a[start:start + rows], np.zeros((BATCH - rows, *a.shape[1:]), a.dtype)]), x)
      outs.append(jax.tree.map(lambda a: np.asarray(a)[:rows], fn(chunk)))
    return jax.tree.map(lambda *a: np.concatenate(a), *outs)

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
    t = self._trained
    codes = jax.eval_shape(lambda x: t.encode(t.variables, x),
                           jax.ShapeDtypeStruct((1, *self.image_shape), np.uint8))
    return {k: tuple(v.shape[1:]) for k, v in codes.items()}

  # --- what a model does ----------------------------------------------------------------

  def encode(self, images) -> dict:
    """The code of each image: {'latent': float32 [N, ...]} (every part the decoder sees)."""
    self._need(False, what='code')
    x, single = self._images(images)
    t = self._trained
    codes = self._batched(lambda b: t.encode(t.variables, b), x)
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
    for k, v in arrays.items():
      if v.shape[1:] != want[k]:
        raise ValueError(f'codes[{k!r}] has shape {v.shape[1:]} per image, this model\'s is '
                         f'{want[k]}.')
    t = self._trained
    images = self._batched(lambda b: t.decode(t.variables, b), arrays)
    return images[0] if single else images

  def reconstruct(self, images) -> np.ndarray:
    """The model's output for each image: float32 [N, H, W, C] in [0, 1]."""
    self._need(False, what='reconstruction')
    x, single = self._images(images)
    t = self._trained
    out = self._batched(lambda b: t.reconstruct(b), x)
    return out[0] if single else out

  def predict(self, images) -> np.ndarray:
    """A classifier's class index for each image (int [N])."""
    self._need(True, what='predict')
    x, single = self._images(images)
    t = self._trained
    logits = self._batched(lambda b: t.apply(t.variables, b)['logits'], x)
    labels = np.argmax(logits, axis=-1)
    return labels[0] if single else labels


def load(workdir: str) -> Model:
  """The trained model of a launch.py workdir: the checkpoint its results.json reports (of a
  run still training, its best so far, with a warning). Reading never changes the workdir."""
  return Model(trained_lib.load_trained(workdir))
