"""Image-quality metrics for evaluation, computed on device.

Definitions (state them next to any table; docs/performance.md compares them with
scikit-image's and torchmetrics'):

- `mse`, `l1`: mean over height, width and channels, pixels in [0, 1].
- `psnr`: `dm_pix.psnr`, i.e. 10 * log10(1 / MSE) in dB for pixel range 1.0.
  A data set's PSNR is the mean of per-image PSNRs, not the PSNR of the mean
  MSE. A perfect reconstruction would give inf and make every mean inf, so
  per-image PSNR is capped at `MAX_PSNR` = 100 dB, which is the same as
  flooring per-image MSE at 1e-10.
- `snr`: 10 * log10(signal power / error power) of each image in dB (S4): the mean of the
  target's squared pixels over its MSE, both floored at 1e-10, capped at +-100 dB.
- `ssim`: `dm_pix.ssim` with its defaults: 11-tap Gaussian window, sigma 1.5,
  k1 0.01, k2 0.03, valid filtering (a 32x32 image gives a 22x22 map), mean over
  height, width and channels. scikit-image matches it with
  `structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1.0, channel_axis=-1)`. The blur runs as
  two matrix products (`gaussian_blur`), the same values as dm_pix's own.

Evaluation pads its last batch and passes a mask, so that every batch (and
host) has the same shape:

  sums = masked_sums(image_metrics(reconstruction, target), mask)  # per batch
  totals = sum of `sums` over batches and hosts (a tree sum)
  means = finalize(totals)                                         # on host
"""

from typing import Mapping

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from flax_cae.runtime import errors

Array = jnp.ndarray

# 10 * log10(1 / 1e-10): the PSNR of an MSE floored at 1e-10.
MAX_PSNR = 100.0
MSE_FLOOR = 1e-10

# The Gaussian window of dm_pix.ssim: smaller images have no valid SSIM pixel.
SSIM_WINDOW = 11


def _blur_matrix(size: int) -> np.ndarray:
  """[size, size - 10]: column i holds dm_pix.ssim's 11-tap Gaussian (sigma 1.5) at rows
  i..i+10, so z @ M is jnp.convolve(z, filter, mode='valid') along that axis."""
  taps = np.exp(-0.5 * ((np.arange(SSIM_WINDOW) - SSIM_WINDOW // 2) / 1.5) ** 2)
  taps /= taps.sum()
  m = np.zeros((size, size - SSIM_WINDOW + 1), np.float32)
  for i in range(m.shape[1]):
    m[i:i + SSIM_WINDOW, i] = taps[::-1]  # convolution flips the filter (it is symmetric)
  return m


def gaussian_blur(z: Array) -> Array:
  """dm_pix.ssim's separable Gaussian blur ('valid'), [B, H, W, C] -> [B, H-10, W-10, C],
  as two small matrix products: the same sums as dm_pix's vmapped jnp.convolve (to float
  rounding, tested), which XLA's CPU backend ran several times slower."""
  hi = jax.lax.Precision.HIGHEST
  z = jnp.einsum('bhwc,wv->bhvc', z, _blur_matrix(z.shape[2]), precision=hi)
  return jnp.einsum('bhwc,hu->buwc', z, _blur_matrix(z.shape[1]), precision=hi)


def ssim(a: Array, b: Array) -> Array:
  """dm_pix.ssim with its defaults (window, sigma, k1, k2, clipping), blurring with
  gaussian_blur: [B, H, W, C] pairs -> [B]."""
  return dm_pix.ssim(a, b, filter_fn=gaussian_blur)


def image_metrics(reconstruction: Array, target: Array) -> dict[str, Array]:
  """Per-image quality of a batch of reconstructions.

  Args:
    reconstruction: [batch, height, width, channels], pixels in [0, 1].
    target: the same shape, pixels in [0, 1].

  Returns:
    {'mse', 'l1', 'psnr' (dB, capped at 100), 'snr' (dB), 'ssim'}, each float32 [batch].

  Raises:
    DataError: images smaller than the 11x11 SSIM window.
  """
  if reconstruction.shape != target.shape or target.ndim != 4:
    raise ValueError(
        f'reconstruction {reconstruction.shape} and target {target.shape} must '
        'both be [batch, height, width, channels].')
  height, width = target.shape[1], target.shape[2]
  if height < SSIM_WINDOW or width < SSIM_WINDOW:
    raise errors.DataError(
        f'SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels but '
        f'these are {height}x{width}; evaluate on larger images.')
  # float32 even for bf16 model outputs: the metrics are averaged over many
  # images and compared to the literature at 0.01 dB.
  reconstruction = jnp.asarray(reconstruction, jnp.float32)
  target = jnp.asarray(target, jnp.float32)
  mse = dm_pix.mse(reconstruction, target)
  signal = jnp.mean(jnp.square(target), axis=(1, 2, 3))
  snr = 10.0 * jnp.log10(jnp.maximum(signal, MSE_FLOOR) / jnp.maximum(mse, MSE_FLOOR))
  return {
      'mse': mse,
      'snr': jnp.clip(snr, -MAX_PSNR, MAX_PSNR),
      'l1': dm_pix.mae(reconstruction, target),
      # min() maps the inf of a perfect reconstruction to MAX_PSNR.
      'psnr': jnp.minimum(dm_pix.psnr(reconstruction, target), MAX_PSNR),
      'ssim': ssim(reconstruction, target),
  }


def masked_sums(per_image: Mapping[str, Array],
                mask: Array) -> dict[str, Array]:
  """Sums per-image metrics over the real (unpadded) images of a batch.

  Args:
    per_image: name -> [batch] values, e.g. from `image_metrics`.
    mask: [batch] bool, True for real images, False for padding.

  Returns:
    name -> float32 scalar sum over the masked images, plus `count`, the
    number of real images (float32, exact below 2**24 images), so that sums of
    several batches or hosts can simply be added before `finalize`.
  """
  if 'count' in per_image:
    raise ValueError("'count' is reserved for the number of images.")
  mask = jnp.asarray(mask, jnp.bool_)
  # where(), not multiplication: a padded image may hold inf or NaN metrics
  # (e.g. an all-zero pad) and inf * 0 would be NaN.
  sums = {name: jnp.sum(jnp.where(mask, jnp.asarray(value, jnp.float32), 0.0))
          for name, value in per_image.items()}
  sums['count'] = jnp.sum(mask, dtype=jnp.float32)
  return sums


def finalize(sums: Mapping[str, Array]) -> dict[str, float]:
  """Turns (summed) `masked_sums` outputs into means; call it on the host.

  Args:
    sums: name -> scalar sum, plus `count`.

  Returns:
    name -> mean over all counted images, as Python floats (without `count`).

  Raises:
    DataError: `count` is 0, i.e. nothing was evaluated.
  """
  count = float(np.asarray(sums['count']))
  if count <= 0:
    raise errors.DataError(
        'No images were evaluated (count is 0); check that the evaluation '
        'split is not empty.')
  return {name: float(np.asarray(value)) / count
          for name, value in sums.items() if name != 'count'}


def mean_image_psnr(train_images_uint8: np.ndarray,
                    eval_images_uint8: np.ndarray,
                    chunk_size: int = 1024) -> float:
  """PSNR (dB) of predicting the mean training image for every eval image.

  The floor any autoencoder must beat: it uses no information about the eval
  image at all. Computed like `image_metrics` (mean of per-image PSNR, MSE
  floored at 1e-10, pixel range 1.0), in float64 on the host.

  Args:
    train_images_uint8: [n_train, height, width(, channels)] uint8 in [0, 255].
    eval_images_uint8: [n_eval, height, width(, channels)] uint8, same image
      shape.
    chunk_size: eval images per chunk, to bound host memory.

  Returns:
    Mean over eval images of the per-image PSNR in dB.
  """
  train = np.asarray(train_images_uint8)
  evals = np.asarray(eval_images_uint8)
  for what, images in (('train', train), ('eval', evals)):
    if images.dtype != np.uint8:
      raise TypeError(f'{what} images must be uint8 in [0, 255], '
                      f'got {images.dtype}.')
    if images.shape[0] == 0:
      raise errors.DataError(f'There are no {what} images.')
  if train.shape[1:] != evals.shape[1:]:
    raise ValueError(f'train images {train.shape[1:]} and eval images '
                     f'{evals.shape[1:]} must have the same shape.')
  mean_image = train.mean(axis=0, dtype=np.float64) / 255.0
  psnrs = []
  for start in range(0, evals.shape[0], chunk_size):
    chunk = evals[start:start + chunk_size].astype(np.float64) / 255.0
    per_image_mse = np.mean(
        np.square(chunk - mean_image).reshape(chunk.shape[0], -1), axis=1)
    psnrs.append(-10.0 * np.log10(np.maximum(per_image_mse, MSE_FLOOR)))
  return float(np.mean(np.concatenate(psnrs)))
