"""Reconstruction losses, chosen by name from the config.

Every loss maps `(reconstruction, target)`, both [batch, height, width,
channels] with pixels in [0, 1], to a float32 per-example loss of shape
[batch]; the training loop takes the mean (so padded or weighted batches stay
possible). Names follow the papers: S1 ("Exploring Enhanced Architectures for
Convolutional Autoencoders") compares `l1`, `mse`, `bce` and `l1+mse`
(alpha * L1 + beta * MSE); S0 suggests `mse+ssim`; `neg_psnr` trains on the
per-image PSNR that the evaluation reports.

Config (an `ml_collections.ConfigDict`; missing keys take the defaults):

  name: one of `loss_names()`.
  alpha: weight of L1 in `l1+mse` (default 0.1, S1's best "alpha-beta = 0.1-1").
  beta: weight of MSE in `l1+mse` (default 1.0).
  ssim_weight: weight w of (1 - SSIM) in `mse+ssim` (default 1.0).
"""

import functools
from typing import Callable, Mapping, Union

import jax.numpy as jnp
import ml_collections

from flax_cae.runtime import errors
from flax_cae.measures import metrics
from flax_cae.measures.metrics import SSIM_WINDOW

Array = jnp.ndarray
LossFn = Callable[[Array, Array], Array]

# Probabilities are clipped to [eps, 1 - eps] before the logs in BCE: a sigmoid
# output that saturates at exactly 0 or 1 would otherwise give inf and NaN
# gradients. 1e-7 is still distinct from 1 in float32 (spacing there is 6e-8).
BCE_EPS = 1e-7

DEFAULTS = {'alpha': 0.1, 'beta': 1.0, 'ssim_weight': 1.0}


def _as_float32(reconstruction: Array, target: Array) -> tuple[Array, Array]:
  """Casts both images to float32 so bf16 model outputs still sum accurately."""
  if reconstruction.shape != target.shape:
    raise ValueError(
        f'reconstruction {reconstruction.shape} and target {target.shape} must '
        'have the same [batch, height, width, channels] shape.')
  return (jnp.asarray(reconstruction, jnp.float32),
          jnp.asarray(target, jnp.float32))


def _per_example_mean(x: Array) -> Array:
  """[batch, H, W, C] -> [batch]: mean over everything but the batch axis."""
  return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def mse(reconstruction: Array, target: Array) -> Array:
  """Mean squared error per example: [B, H, W, C] x2 -> [B]."""
  reconstruction, target = _as_float32(reconstruction, target)
  return _per_example_mean(jnp.square(reconstruction - target))


def l1(reconstruction: Array, target: Array) -> Array:
  """Mean absolute error per example: [B, H, W, C] x2 -> [B]."""
  reconstruction, target = _as_float32(reconstruction, target)
  return _per_example_mean(jnp.abs(reconstruction - target))


def bce(reconstruction: Array, target: Array) -> Array:
  """Binary cross-entropy per example (mean over pixels, in nats): -> [B].

  `reconstruction` is a probability (sigmoid output), clipped to
  [BCE_EPS, 1 - BCE_EPS]. Targets may be any value in [0, 1]; for non-binary
  targets the minimum is the targets' entropy, not 0, so compare BCE values only
  on the same data.
  """
  reconstruction, target = _as_float32(reconstruction, target)
  p = jnp.clip(reconstruction, BCE_EPS, 1.0 - BCE_EPS)
  return _per_example_mean(
      -(target * jnp.log(p) + (1.0 - target) * jnp.log1p(-p)))


def l1_mse(reconstruction: Array, target: Array, *, alpha: float = 0.1,
           beta: float = 1.0) -> Array:
  """S1's combined loss alpha * L1 + beta * MSE per example: -> [B]."""
  return alpha * l1(reconstruction, target) + beta * mse(reconstruction, target)


def _check_ssim_size(images: Array) -> None:
  height, width = images.shape[-3], images.shape[-2]
  if height < SSIM_WINDOW or width < SSIM_WINDOW:
    raise errors.ConfigError(
        f'SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels '
        f'(its Gaussian window) but these are {height}x{width}; choose a loss '
        'without SSIM (mse, l1, bce, l1+mse) for such small images.')


def ssim(reconstruction: Array, target: Array) -> Array:
  """1 - SSIM per example (dm_pix.ssim defaults, see metrics.py): -> [B].

  0 for identical images. Needs height and width >= 11.
  """
  reconstruction, target = _as_float32(reconstruction, target)
  _check_ssim_size(target)
  return 1.0 - metrics.ssim(reconstruction, target)


def mse_ssim(reconstruction: Array, target: Array, *,
             ssim_weight: float = 1.0) -> Array:
  """MSE + ssim_weight * (1 - SSIM) per example: -> [B].

  The default weight 1.0 is the plain sum S0 names "MSE+SSIM". Know that the
  SSIM term then dominates: on CIFAR-10 images at 20-30 dB PSNR its gradient is
  about 30-100x larger than MSE's (measured on blurred and noisy copies), so
  MSE mainly pins down flat regions and colour offsets that SSIM barely sees.
  Use ssim_weight ~0.01-0.03 to give both terms similar gradients.
  """
  return (mse(reconstruction, target)
          + ssim_weight * ssim(reconstruction, target))


# Floor under the per-image MSE in `neg_psnr`: caps a perfect reconstruction at
# 100 dB instead of -log(0) = inf.
NEG_PSNR_FLOOR = 1e-10


def neg_psnr(reconstruction: Array, target: Array) -> Array:
  """-PSNR per example, in dB, for pixels in [0, 1]: 10 log10(MSE) -> [B].

  The batch mean of this loss is minus the mean per-image PSNR that the
  evaluation reports (and PCA is scored by), so training on it optimizes that
  number directly. Plain MSE instead weights every image by its squared error
  and so spends capacity on the hardest, most textured images; here each
  image's MSE gradient is divided by that image's MSE. The loss is negative
  (about -20 to -30 on CIFAR-10).
  """
  return 10.0 * jnp.log10(mse(reconstruction, target) + NEG_PSNR_FLOOR)


# name -> loss function; each takes (reconstruction, target) and returns [B].
LOSSES: dict[str, Callable[..., Array]] = {
    'mse': mse,
    'l1': l1,
    'bce': bce,
    'l1+mse': l1_mse,
    'ssim': ssim,
    'mse+ssim': mse_ssim,
    'neg_psnr': neg_psnr,
}

# name -> the config keys get_loss passes to it as keyword arguments.
_LOSS_KEYS: dict[str, tuple[str, ...]] = {
    'l1+mse': ('alpha', 'beta'),
    'mse+ssim': ('ssim_weight',),
}


def weight_names(name: str) -> tuple[str, ...]:
  """The numeric weights of loss `name` (e.g. alpha, beta), in the order get_loss reads them."""
  return _LOSS_KEYS.get(name, ())


def loss_names() -> list[str]:
  """The valid values of `config.name`, sorted."""
  return sorted(LOSSES)


def get_loss(
    config: Union[ml_collections.ConfigDict, Mapping, str]) -> LossFn:
  """Returns `fn(reconstruction, target) -> [batch]` float32 per-example loss.

  Args:
    config: a ConfigDict (or mapping) with `name` and optionally `alpha`,
      `beta`, `ssim_weight` (see the module docstring), or just a loss name.

  Raises:
    ConfigError: unknown name, or a weight that is negative or not a number.
  """
  if isinstance(config, str):
    config = {'name': config}
  name = config.get('name', None)
  if name not in LOSSES:
    raise errors.unknown_name('loss', str(name), LOSSES)
  fn, keys = LOSSES[name], _LOSS_KEYS.get(name, ())
  kwargs = {}
  for key in keys:
    value = config.get(key, None)
    value = DEFAULTS[key] if value is None else value
    try:
      value = float(value)
    except (TypeError, ValueError):
      raise errors.ConfigError(
          f'loss.{key} must be a number but is {value!r}; set it to a '
          f'non-negative float such as {DEFAULTS[key]}.') from None
    if not value >= 0.0:  # also rejects NaN
      raise errors.ConfigError(
          f'loss.{key} must be >= 0 but is {value}; set a non-negative weight '
          f'such as {DEFAULTS[key]}.')
    kwargs[key] = value
  return functools.partial(fn, **kwargs) if kwargs else fn
