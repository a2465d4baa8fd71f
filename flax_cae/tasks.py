"""What a model is trained to produce from what: the seam between the one loop and a task.

A task turns a batch (uint8 images and int32 labels) into (inputs, targets), scores the
model's outputs with its loss, and names the per-image metrics of evaluation. The loop only
calls these; a denoiser (noisy input, clean target), a VAE (reconstruction + beta * KL) or
a classifier (labels, accuracy) is a new task here, not a branch in the loop. A task that
ignores the labels costs nothing for them: XLA drops the unused gather.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from flax_cae import losses as losses_lib
from flax_cae import models
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

  reconstructs = True  # outputs['reconstruction'] is an image: the loop draws grids of it
  # Evaluation metrics ('loss' is added by the loop); the minimised ones are train.MINIMIZED.
  metric_names = ('mse', 'l1', 'psnr', 'ssim')

  def __init__(self, config):
    loss = losses_lib.get_loss(config.loss)  # validates the name and the weights
    self.loss_name = config.loss.name
    self.default_weights = dict(getattr(loss, 'keywords', {}))

  def pair(self, images_u8: jax.Array, labels: jax.Array, key: jax.Array):
    """(inputs, targets) for a batch of uint8 images [B, H, W, C] and their labels [B];
    `key` is the batch's own random stream (unused here: a denoiser draws its noise from it)."""
    del labels, key
    x = to_float(images_u8)
    return x, x

  def loss(self, outputs: dict, targets: jax.Array, weights: dict) -> jax.Array:
    """Per-example loss [B] of the model's outputs."""
    fn = functools.partial(losses_lib.LOSSES[self.loss_name], **weights)
    return fn(outputs['reconstruction'], targets)

  def metrics(self, outputs: dict, targets: jax.Array) -> dict:
    """Per-image evaluation metrics [B] each: MSE, L1, PSNR (dB), SSIM."""
    return metrics_lib.image_metrics(outputs['reconstruction'], targets)

  @staticmethod
  def summary(values: dict) -> str:
    return f"PSNR {values['psnr']:.2f} dB, SSIM {values['ssim']:.4f}, MSE {values['mse']:.5f}"


class Classification:
  """A classifier (S2's LeNet-5) on the image's label: softmax cross-entropy; accuracy."""

  reconstructs = False
  metric_names = ('accuracy', 'cross_entropy')

  def __init__(self, config):
    del config  # config.loss is for reconstructions; a classifier's loss is cross-entropy
    self.default_weights = {}

  def pair(self, images_u8, labels, key):
    del key
    return to_float(images_u8), labels

  def loss(self, outputs, targets, weights):
    del weights
    return optax.softmax_cross_entropy_with_integer_labels(
        outputs['logits'].astype(jnp.float32), targets)

  def metrics(self, outputs, targets):
    logits = outputs['logits'].astype(jnp.float32)
    return {'accuracy': (jnp.argmax(logits, -1) == targets).astype(jnp.float32),
            'cross_entropy': optax.softmax_cross_entropy_with_integer_labels(logits, targets)}

  @staticmethod
  def summary(values: dict) -> str:
    return f"accuracy {values['accuracy']:.4f}, cross-entropy {values['cross_entropy']:.4f}"


TASKS = {'reconstruction': Reconstruction, 'classification': Classification}


def task_name(config) -> str:
  """The model's task: classifiers (models.CLASSIFIERS) classify, the others reconstruct."""
  return 'classification' if config.model.name in models.CLASSIFIERS else 'reconstruction'


def get_task(config):
  return TASKS[task_name(config)](config)
