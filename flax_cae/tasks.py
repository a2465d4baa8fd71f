"""What a model is trained to produce from what: the seam between the one loop and a task.

A task turns a batch of uint8 images into (inputs, targets), scores the model's outputs
with the configured loss, and names the per-image metrics of evaluation. The loop only
calls these three; a denoiser (noisy input, clean target), a VAE (reconstruction +
beta * KL) or a classifier (labels, accuracy) is a new task here, not a branch in the loop.
"""

import functools

import jax
import jax.numpy as jnp

from flax_cae import errors
from flax_cae import losses as losses_lib
from flax_cae import metrics as metrics_lib


def to_float(images_u8):
  """uint8 [B, H, W, C] -> float32 in [0, 1], inside the compiled step."""
  return images_u8.astype(jnp.float32) / 255.0


class Reconstruction:
  """Autoencoding (S0-S3): the input is the image and so is the target.

  `weights` are the loss's numeric weights (losses.weight_names, e.g. S1's alpha and
  beta of alpha * L1 + beta * MSE); they are arguments, not constants, so members that
  differ only in them can be trained together under `jax.vmap`.
  """

  def __init__(self, config):
    loss = losses_lib.get_loss(config.loss)  # validates the name and the weights
    self.loss_name = config.loss.name
    self.default_weights = dict(getattr(loss, 'keywords', {}))

  def pair(self, images_u8: jax.Array, key: jax.Array):
    """(inputs, targets) for a batch of uint8 images [B, H, W, C]; `key` is the batch's
    own random stream (unused here: a denoiser draws its noise from it)."""
    del key
    x = to_float(images_u8)
    return x, x

  def loss(self, outputs: dict, targets: jax.Array, weights: dict) -> jax.Array:
    """Per-example loss [B] of the model's outputs."""
    fn = functools.partial(losses_lib.LOSSES[self.loss_name], **weights)
    return fn(outputs['reconstruction'], targets)

  def metrics(self, outputs: dict, targets: jax.Array) -> dict:
    """Per-image evaluation metrics [B] each: MSE, L1, PSNR (dB), SSIM."""
    return metrics_lib.image_metrics(outputs['reconstruction'], targets)


TASKS = {'reconstruction': Reconstruction}


def get_task(config):
  name = config.get('task', 'reconstruction')
  if name not in TASKS:
    raise errors.unknown_name('task', name, TASKS)
  return TASKS[name](config)
