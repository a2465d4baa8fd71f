"""The PCA baseline, scored beside the learned models on the same images and metrics.

PCA: the optimal *linear* code with k floats per image (Eckart-Young: no linear encoder
and decoder with k numbers in between has a lower mean squared error on the data it was
fitted on). Fitted on the training split on the device: the covariance [D, D] is summed
over chunks of images, then `jnp.linalg.eigh`. A study places PCA with as many floats as
each model's true bottleneck beside it.
"""


import jax
import jax.numpy as jnp

from flax_cae.measures import metrics as metrics_lib
from flax_cae.data import pipeline
from flax_cae.data.pipeline import to_float

_HI = jax.lax.Precision.HIGHEST
CHUNK = 1000


@jax.jit
def _sums(images_u8, mask):
  x = to_float(images_u8).reshape(images_u8.shape[0], -1) * mask[:, None]
  return x.sum(0), mask.sum()


@jax.jit
def _scatter(images_u8, mask, mean):
  x = (to_float(images_u8).reshape(images_u8.shape[0], -1) - mean) * mask[:, None]
  return jnp.matmul(x.T, x, precision=_HI)


class PCA:
  """Principal components of a split's images, pixels in [0, 1]."""

  def __init__(self, split: pipeline.Split):
    self.image_shape = split.image_shape
    total, count = None, 0
    for images, mask in pipeline.chunks(split, CHUNK):
      s, c = _sums(images, mask)
      total, count = (s if total is None else total + s), count + c
    self.mean = total / count
    scatter = None
    for images, mask in pipeline.chunks(split, CHUNK):
      s = _scatter(images, mask, self.mean)
      scatter = s if scatter is None else scatter + s
    eigvals, eigvecs = jnp.linalg.eigh(scatter / count)
    order = jnp.argsort(eigvals)[::-1]  # largest variance first
    self.components = eigvecs[:, order]  # [D, D], columns are the principal directions
    self.explained = eigvals[order]

  def reconstruct(self, images_u8, k: int):
    """[B, H, W, C] uint8 -> the projection on the first k components, clipped to [0, 1]."""
    return _reconstruct(images_u8, self.mean, self.components[:, :k])

  def encode(self, images_u8, k: int):
    """[B, H, W, C] uint8 -> the k coefficients [B, k] of the first k components."""
    x = to_float(jnp.asarray(images_u8)).reshape(len(images_u8), -1) - self.mean
    return jnp.matmul(x, self.components[:, :k], precision=_HI)

  def decode(self, coefficients):
    """[B, k] coefficients -> images [B, H, W, C], clipped to [0, 1]."""
    z = jnp.asarray(coefficients, jnp.float32)
    x = jnp.matmul(z, self.components[:, :z.shape[-1]].T, precision=_HI) + self.mean
    return jnp.clip(x.reshape(-1, *self.image_shape), 0.0, 1.0)

  def score(self, split: pipeline.Split, k: int) -> dict:
    """Mean per-image MSE, L1, PSNR (dB), SSIM of k-component reconstructions of a split,
    with the same definitions as the models' evaluation (metrics.image_metrics)."""
    total = None
    for images, mask in pipeline.chunks(split, CHUNK):
      sums = _score(images, mask, self.mean, self.components[:, :k])
      total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    total = jax.device_get(total)
    return {**metrics_lib.finalize(total), 'count': int(total['count'])}


@jax.jit
def _reconstruct(images_u8, mean, v):
  x = to_float(images_u8)
  flat = x.reshape(x.shape[0], -1) - mean
  recon = jnp.matmul(jnp.matmul(flat, v, precision=_HI), v.T, precision=_HI) + mean
  return jnp.clip(recon.reshape(x.shape), 0.0, 1.0)


@jax.jit
def _score(images_u8, mask, mean, v):
  recon = _reconstruct(images_u8, mean, v)
  return metrics_lib.masked_sums(metrics_lib.image_metrics(recon, to_float(images_u8)), mask)
