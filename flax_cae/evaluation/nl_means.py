"""Classical denoising baseline (S3, S4): scikit-image's non-local means on exactly the noisy
test images the models see (noise.noisy_split_images), scored with the models' metrics.

Parameters (scikit-image's recommendations for Gaussian noise): patch 5x5, search distance
6, fast mode, `sigma` = the noise's standard deviation where the config gives it (Gaussian),
else scikit-image's `estimate_sigma` per image; filter strength h = 0.8 * sigma.
"""

import jax
import jax.numpy as jnp
import numpy as np

from flax_cae.measures import metrics as metrics_lib
from flax_cae.data import noise as noise_lib
from flax_cae.data import pipeline, sources

PATCH_SIZE, PATCH_DISTANCE, H_FACTOR = 5, 6, 0.8
CHUNK = 256


def nl_means(noisy: np.ndarray, sigma: float | None) -> np.ndarray:
  """float [N, H, W, C] in [0, 1] -> NL-means denoised, image by image."""
  from skimage.restoration import denoise_nl_means, estimate_sigma  # pylint: disable=g-import-not-at-top
  out = np.empty_like(noisy)
  for i, image in enumerate(noisy):
    s = sigma if sigma is not None else float(np.mean(estimate_sigma(image, channel_axis=-1)))
    out[i] = denoise_nl_means(image, patch_size=PATCH_SIZE, patch_distance=PATCH_DISTANCE,
                              h=H_FACTOR * s, sigma=s, fast_mode=True, channel_axis=-1
                              ).reshape(image.shape)  # (one channel comes back squeezed)
  return np.clip(out, 0.0, 1.0)


def describe(noise) -> str:
  kind, sigma, amount = noise_lib.params(noise)
  what = f'sigma {sigma:g}' if kind == 'gaussian' else f'amount {amount:g}'
  return f'NL-means ({kind.replace("_", "-")} {what})'


def score_nl_means(split: pipeline.Split, noise) -> dict:
  """Mean per-image metrics of NL-means on the split's noisy images, and of the noisy images
  themselves (noisy_*), with the definitions of the models' evaluation."""
  kind, sigma, _ = noise_lib.params(noise)
  totals = None
  for start in range(0, split.n, CHUNK):
    idx = np.arange(start, min(start + CHUNK, split.n))
    if split.on_device:
      images = np.asarray(jax.device_get(split.images[start:start + len(idx)]))
    else:
      images = sources.load_arrays(split.source, idx)['image']
    noisy = noise_lib.noisy_split_images(images, start, noise_lib.params(noise))
    denoised = nl_means(noisy, sigma if kind == 'gaussian' else None)
    clean = images.astype(np.float32) / 255.0
    ours = metrics_lib.image_metrics(jnp.asarray(denoised, jnp.float32), jnp.asarray(clean))
    theirs = metrics_lib.image_metrics(jnp.asarray(noisy), jnp.asarray(clean))
    per_image = {**ours, **{f'noisy_{k}': v for k, v in theirs.items()}}
    sums = metrics_lib.masked_sums(per_image, jnp.ones(len(idx), bool))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return metrics_lib.finalize(jax.device_get(totals))
