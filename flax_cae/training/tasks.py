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

from flax_cae.measures import losses as losses_lib
from flax_cae import models
from flax_cae.data import noise as noise_lib
from flax_cae.data.pipeline import to_float
from flax_cae.measures import metrics as metrics_lib
from flax_cae.runtime.errors import ConfigError


class Reconstruction:
  """Autoencoding (S0-S3), and denoising (S3, S4) when `data.noise` is on: the input is the
  image (its noisy version when denoising: flax_cae/data/noise.py) and the target the clean image.

  `weights` are the loss's numeric weights (losses.weight_names, e.g. S1's alpha and
  beta of alpha * L1 + beta * MSE); they are arguments, not constants, so members that
  differ only in them can be trained together under `jax.vmap`.
  """

  reconstructs = True  # outputs['reconstruction'] is an image: the loop draws grids of it
  samples_prior = False  # a VAE also draws samples from its prior at each evaluation

  def __init__(self, config):
    loss = losses_lib.get_loss(config.loss)  # validates the name and the weights
    self.loss_name = config.loss.name
    self.default_weights = dict(getattr(loss, 'keywords', {}))
    self.noise = noise_lib.params(config.data.get('noise') or {})
    self.denoising = self.noise[0] != 'none'
    # Evaluation metrics ('loss' is added by the loop); the minimised ones are trainer.MINIMIZED.
    self.metric_names = ('mse', 'l1', 'psnr', 'snr', 'ssim') + (
        ('noisy_mse', 'noisy_psnr', 'noisy_snr', 'noisy_ssim') if self.denoising else ())

  def pair(self, images_u8: jax.Array, labels: jax.Array, keys: jax.Array):
    """(inputs, targets) for a batch of uint8 images [B, H, W, C] and their labels [B];
    `keys` [B] are the images' own noise keys (noise.train_keys / eval_keys)."""
    del labels
    x = to_float(images_u8)
    return noise_lib.corrupt(x, keys, self.noise), x

  def loss(self, outputs: dict, targets: jax.Array, weights: dict) -> jax.Array:
    """Per-example loss [B] of the model's outputs."""
    fn = functools.partial(losses_lib.LOSSES[self.loss_name], **weights)
    return fn(outputs['reconstruction'], targets)

  def metrics(self, outputs: dict, targets: jax.Array, inputs: jax.Array) -> dict:
    """Per-image evaluation metrics [B] each: MSE, L1, PSNR (dB), SNR (dB), SSIM; when
    denoising, also those of the noisy input itself (noisy_*), on the same images."""
    out = metrics_lib.image_metrics(outputs['reconstruction'], targets)
    if self.denoising:
      noisy = metrics_lib.image_metrics(inputs, targets)
      out.update({f'noisy_{k}': noisy[k] for k in ('mse', 'psnr', 'snr', 'ssim')})
    return out

  @staticmethod
  def summary(values: dict) -> str:
    text = (f"PSNR {values['psnr']:.2f} dB, SNR {values['snr']:.2f} dB, SSIM {values['ssim']:.4f}, "
            f"MSE {values['mse']:.5f}")
    if 'noisy_snr' in values:
      text += f" (noisy input: PSNR {values['noisy_psnr']:.2f} dB, SNR {values['noisy_snr']:.2f} dB)"
    if 'kl' in values:
      text += f", KL {values['kl']:.3f}"
    return text


class VariationalReconstruction(Reconstruction):
  """A VAE (conv_vae): loss = reconstruction + beta * KL(q(z|x) || N(0, I)), per image. The
  reconstruction term is the configured loss summed over pixels (for MSE, the Gaussian
  log-likelihood up to constants), so beta = model.beta = 1 is the ELBO. KL is reported
  on its own; each evaluation also draws samples from the prior."""

  samples_prior = True

  def __init__(self, config):
    super().__init__(config)
    self.beta = float(config.model.get('beta', 1.0))
    self.metric_names = self.metric_names + ('kl',)

  @staticmethod
  def kl(outputs):
    mean, logvar = outputs['mean'], outputs['logvar']
    return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar, axis=-1)

  def loss(self, outputs, targets, weights):
    pixels = targets[0].size
    return super().loss(outputs, targets, weights) * pixels + self.beta * self.kl(outputs)

  def metrics(self, outputs, targets, inputs):
    return {**super().metrics(outputs, targets, inputs), 'kl': self.kl(outputs)}


class Classification:
  """A classifier (S2's LeNet-5) on the image's label: softmax cross-entropy; accuracy."""

  reconstructs = False
  samples_prior = False

  metric_names = ('accuracy', 'cross_entropy')

  LOSS = 'cross_entropy'

  def __init__(self, config):
    if config.loss.name != self.LOSS:  # what results.json reports must be what was trained
      raise ConfigError(
          f'{config.model.name} is a classifier, trained on cross-entropy: loss.name='
          f'{config.loss.name!r} does not apply to it; set --config.loss.name={self.LOSS} '
          '(configs/cifar10_lenet5.py does).')
    self.loss_name = self.LOSS
    self.default_weights = {}

  def pair(self, images_u8, labels, keys):
    del keys
    return to_float(images_u8), labels

  def loss(self, outputs, targets, weights):
    del weights
    return optax.softmax_cross_entropy_with_integer_labels(
        outputs['logits'].astype(jnp.float32), targets)

  def metrics(self, outputs, targets, inputs):
    del inputs
    logits = outputs['logits'].astype(jnp.float32)
    return {'accuracy': (jnp.argmax(logits, -1) == targets).astype(jnp.float32),
            'cross_entropy': optax.softmax_cross_entropy_with_integer_labels(logits, targets)}

  @staticmethod
  def summary(values: dict) -> str:
    return f"accuracy {values['accuracy']:.4f}, cross-entropy {values['cross_entropy']:.4f}"


class RateDistortion(Reconstruction):
  """A learned codec (models.CODECS, Balle et al. 2017): loss = rate + lambda * distortion
  per image, the rate in bits per pixel under the model's own density (outputs['bits']),
  the distortion the configured loss times 255^2 (MSE on 0-255 pixels, as CompressAI
  weighs it, so lambda = loss.rd_lambda is comparable with its tables). Evaluation adds
  `bpp`: the ideal rate of the rounded code, which the range coder's bytes approach."""

  def __init__(self, config):
    super().__init__(config)
    lam = config.loss.get('rd_lambda', 0.01)
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam > 0:
      raise ConfigError(f'loss.rd_lambda must be a number > 0 (the weight of distortion '
                        f'against rate; larger = more bits, less error), got {lam!r}.')
    self.default_weights = {**self.default_weights, 'rd_lambda': float(lam)}
    self.metric_names = self.metric_names + ('bpp',)

  @staticmethod
  def bpp(outputs, targets):
    return outputs['bits'] / (targets.shape[1] * targets.shape[2])

  def loss(self, outputs, targets, weights):
    rest = {k: v for k, v in weights.items() if k != 'rd_lambda'}
    distortion = super().loss(outputs, targets, rest) * 255.0 ** 2
    return self.bpp(outputs, targets) + weights['rd_lambda'] * distortion

  def metrics(self, outputs, targets, inputs):
    return {**super().metrics(outputs, targets, inputs), 'bpp': self.bpp(outputs, targets)}

  @staticmethod
  def summary(values: dict) -> str:
    return Reconstruction.summary(values) + f", {values['bpp']:.3f} bits per pixel"


TASKS = {'reconstruction': Reconstruction, 'classification': Classification,
         'variational': VariationalReconstruction, 'rate_distortion': RateDistortion}


def task_name(config) -> str:
  """The model's task, as its registry entry says (models.ModelSpec.task): reconstruction
  (denoising too when data.noise is on), variational, classification or rate_distortion. A
  name the registry lacks reads as reconstruction here; checks.validate refuses it."""
  spec = models.MODELS.get(config.model.name)
  return spec.task if spec else 'reconstruction'


def get_task(config):
  return TASKS[task_name(config)](config)
