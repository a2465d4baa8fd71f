"""Corruptions for denoising (S3, S4), drawn on the device inside the compiled steps.

`data.noise.kind`: 'none', 'gaussian' (x + sigma * N(0, 1), clipped to [0, 1]) or
'salt_pepper' (a fraction `amount` of pixel positions set to black or white, half each, all
channels alike). Each image's noise comes from its own key: while training,
fold_in(key(seed, 'noise', step), row of the batch), so every epoch sees new noise; for
evaluation, fold_in(key(0, 'noise', 0), index of the image in its split), so an image is
corrupted the same way at every evaluation, resume, batch size and device count, and the
classical baselines see exactly the noisy images the models see.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from flax_cae.runtime import streams
from flax_cae.runtime.errors import ConfigError, unknown_name

NOISES = ('none', 'gaussian', 'salt_pepper')


# The largest Gaussian sigma accepted: pixels live in [0, 1], so a larger one only clips the
# input to black and white (S3 and S4 use 0.1-0.5).
MAX_SIGMA = 1.0


def check(noise) -> None:
  """One sentence for a bad data.noise (before anything is read)."""
  kind = noise.get('kind', 'none')
  if kind not in NOISES:
    raise unknown_name('data.noise.kind', kind, NOISES)
  sigma, amount = noise.get('sigma', 0.1), noise.get('amount', 0.05)
  # Both are checked whatever the kind: a bad value waiting for the kind to change is still bad.
  if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma <= MAX_SIGMA:
    raise ConfigError(f'data.noise.sigma must be a number in (0, {MAX_SIGMA:g}] (the Gaussian '
                      f'noise\'s standard deviation, pixels in [0, 1]; at {MAX_SIGMA:g} the '
                      f'clipped input is already mostly noise), got {sigma!r}; e.g. '
                      '--config.data.noise.sigma=0.1.')
  if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 < amount <= 1:
    raise ConfigError(f'data.noise.amount must be in (0, 1] (the share of pixels replaced), '
                      f'got {amount!r}; e.g. --config.data.noise.amount=0.05.')


def is_on(noise) -> bool:
  return noise is not None and noise.get('kind', 'none') != 'none'


def eval_keys(indices) -> jax.Array:
  """Per-image keys of evaluation: a function of each image's index in its split only."""
  return jax.vmap(jax.random.fold_in, (None, 0))(streams.key(0, 'noise', 0),
                                                 jnp.asarray(indices, jnp.int32))


def train_keys(seed, step, batch_size: int) -> jax.Array:
  return jax.vmap(jax.random.fold_in, (None, 0))(streams.key(seed, 'noise', step),
                                                 jnp.arange(batch_size))


def params(noise) -> tuple[str, float, float]:
  """(kind, sigma, amount) of a data.noise section (hashable: a compiled function's constant)."""
  return (noise.get('kind', 'none'), float(noise.get('sigma', 0.1)),
          float(noise.get('amount', 0.05)))


def corrupt(x: jax.Array, keys: jax.Array, noise: tuple[str, float, float]) -> jax.Array:
  """x: float [B, H, W, C] in [0, 1]; keys: [B]; noise: params(...) -> noisy images in [0, 1]."""
  kind, sigma, amount = noise
  if kind == 'none':
    return x
  if kind == 'gaussian':
    n = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], jnp.float32))(keys)
    return jnp.clip(x + sigma * n, 0.0, 1.0)
  u = jax.vmap(lambda k: jax.random.uniform(k, (*x.shape[1:3], 1)))(keys)
  return jnp.where(u < amount / 2, 0.0, jnp.where(u < amount, 1.0, x))


def noisy_split_images(images_u8: np.ndarray, start: int, noise: tuple[str, float, float]
                       ) -> np.ndarray:
  """The evaluation's noisy versions (float [N, H, W, C]) of a split's images
  [start, start + N) (noise: params(...)): what the models are scored on, for pictures and
  the classical baselines."""
  idx = np.arange(start, start + len(images_u8))
  with streams.context():  # the stream the run's evaluation drew from
    return np.asarray(_corrupt_eval(jnp.asarray(images_u8), jnp.asarray(idx), noise))


@functools.partial(jax.jit, static_argnums=2)
def _corrupt_eval(images_u8, idx, noise):
  return corrupt(images_u8.astype(jnp.float32) / 255.0, eval_keys(idx), noise)
