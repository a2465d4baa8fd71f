"""The models, as Flax linen modules: the registry (`MODELS`: each model's paper, default
widths, task and options), `build_model(config.model, image_shape)` and the true-bottleneck
report. The modules live in autoencoders.py (the studies' autoencoders, LeNet-5),
balle2017.py (the learned codec) and layers.py (the layers they share).

May import: flax_cae.runtime.
"""

import dataclasses
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_cae.runtime.errors import ConfigError, unknown_name
from flax_cae.models import autoencoders as ae
from flax_cae.models import balle2017 as balle
from flax_cae.models.layers import (CODES, CONV_INPUT_GRADS, NORMS, TRANSPOSED_CONVS,
                                    ModelOptions)


class ModelSpec(NamedTuple):
  encoder: type
  decoder: type
  widths: tuple[int, ...]   # default widths; their count is the number of stages
  paper: str
  allows_skips: bool = False
  encoder_residual: str = ''
  torch_mirror: bool = True  # benchmarks/torch_reference.py has a PyTorch copy to race it
  init: str = 'lecun'  # conv kernels; 'he' where LeCun's init lets a deep ReLU stack's signal fade
  any_stages: bool = False  # model.widths may have any length (each entry a stage)
  # What it is trained to do (flax_cae/training/tasks.py): reconstruction, variational
  # (reconstruction + beta * KL), classification or rate_distortion (a learned codec).
  task: str = 'reconstruction'
  latent_code: bool = False  # its code is model.latent_dim floats (rate_cae's is set by its rate)


MODELS = {
    'cae': ModelSpec(ae.CAEEncoder, ae.CAEDecoder, (32, 64, 128),
                     '"Convolutional autoencoder for CIFAR-10" (S0): three conv + max-pool stages, dense bottleneck, three transposed convs',
                     latent_code=True),
    'base_cae': ModelSpec(ae.BaseCAEEncoder, ae.BaseCAEDecoder, (16, 32, 64),
                          'BaseCAE of S1 (Erkol, Guvenli and Koulaeizadeh, "Exploring Enhanced '
                          'Architectures for Convolutional Autoencoders")', latent_code=True),
    'improved_cae': ModelSpec(ae.ImprovedCAEEncoder, ae.ImprovedCAEDecoder, (16, 32, 64, 128),
                              'ImprovedCAE of S1 (skips across the bottleneck with model.skips)',
                              allows_skips=True, latent_code=True),
    'improved_cae_res_interp': ModelSpec(
        ae.ImprovedCAEEncoder, ae.ImprovedCAEDecoder, (16, 32, 64, 128),
        'S1 ImprovedCAE with residuals inside the encoder, resized by bilinear interpolation '
        'and zero channels', allows_skips=True, encoder_residual='interpolate',
        torch_mirror=False, latent_code=True),
    'rate_cae': ModelSpec(ae.RateCAEEncoder, ae.RateCAEDecoder, (),
                          '"Implementation of Convolutional Autoencoder and Learnings on Image '
                          'Compression" (S2): log2(model.rate) conv + ReLU + max-pool stages, decoder of '
                          'nearest-neighbour upsampling + conv', torch_mirror=False),
    'fc_ae': ModelSpec(ae.FCEncoder, ae.FCDecoder, (),
                       'SimpleAE of Zhang, "A Better Autoencoder for Image: Convolutional '
                       'Autoencoder" (S3): flatten, dense hidden_dim, code latent_dim, mirrored',
                       torch_mirror=False, latent_code=True),
    's4_ae': ModelSpec(ae.StridedConvEncoder, ae.StridedConvDecoder, (128, 64, 32, 16),
                       'AE of Pant, "Autoencoder" (S4): four stride-2 convs to a 2x2x16 code '
                       '(28x28), four transposed convs (with model.dropout_rate and batch_norm: '
                       "S4's second model)",
                       torch_mirror=False, init='he'),
    'conv_vae': ModelSpec(ae.VAEEncoder, ae.VAEDecoder, (32, 64),
                          'VAE (Kingma and Welling 2013, arXiv:1312.6114) of Pant, "Autoencoder" '
                          '(S4): stride-2 convs, mean and log-variance heads (latent_dim), '
                          'reparameterised code, transposed-conv decoder; loss + beta * KL',
                          torch_mirror=False, init='he', task='variational', latent_code=True),
    'lenet5': ModelSpec(ae.LeNet5, None, (), 'LeNet-5 (LeCun, Bottou, Bengio and Haffner 1998), '
                        "S2's classifier: softmax over the data set's classes",
                        torch_mirror=False, task='classification'),
    'res_cae': ModelSpec(ae.ResCAEEncoder, ae.ResCAEDecoder, (32, 64, 128),
                         'A residual CAE (residual blocks of He, Zhang, Ren and Sun 2016, '
                         'arXiv:1512.03385): conv stem, per stage a stride-2 conv and model.blocks '
                         'residual blocks, a code of latent_dim floats (model.code: spatial, '
                         'a 1x1 conv; dense, one vector), mirrored with transposed convs; no '
                         'skips',
                         torch_mirror=False, init='he', any_stages=True, latent_code=True),
    'balle2017': ModelSpec(balle.BalleAnalysis, balle.BalleSynthesis, (64, 64, 64),
                           'Balle, Laparra and Simoncelli, "End-to-end Optimized Image '
                           'Compression" (ICLR 2017, arXiv:1611.01704), a learned codec: stride-2 5x5 convs with '
                           'GDN to a code of widths[-1] channels, quantized (noise while '
                           'training), a learned factorized density; loss = rate + '
                           'loss.rd_lambda * distortion', torch_mirror=False, any_stages=True,
                           task='rate_distortion'),
    'improved_cae_res_conv': ModelSpec(
        ae.ImprovedCAEEncoder, ae.ImprovedCAEDecoder, (16, 32, 64, 128),
        'S1 ImprovedCAE with residuals inside the encoder, resized by a strided 1x1 conv',
        allows_skips=True, encoder_residual='resample', torch_mirror=False, latent_code=True),
}

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# The models of each task, as the registry says.
CLASSIFIERS = tuple(n for n, s in MODELS.items() if s.task == 'classification')  # {'logits'}
VAES = tuple(n for n, s in MODELS.items() if s.task == 'variational')
CODECS = tuple(n for n, s in MODELS.items() if s.task == 'rate_distortion')
RATES = (2, 4, 8, 16)      # rate_cae's model.rate (S2)


def rate_widths(rate: int) -> tuple[int, ...]:
  """rate_cae's default channels per stage: 16 then 32s, so the code has 32 channels at every
  rate (S2: 32x4x4 at rate 8)."""
  n = ae.rate_stages(rate)
  return (32,) if n == 1 else (16,) + (32,) * (n - 1)


def model_names() -> list[str]:
  return sorted(MODELS)


def autoencoder_names() -> list[str]:
  return [n for n in model_names() if n not in CLASSIFIERS]


def _is_count(value) -> bool:
  """An integer >= 0 (a bool is not one), as model.blocks and model.stage_blocks need."""
  return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _widths(config, spec: ModelSpec, image_shape, num_classes: int) -> tuple[tuple, int]:
  """(channels per stage, rate_cae's rate): the configured widths, checked against the
  model's stages, else its own."""
  rate = config.get('rate', 8)
  default_widths = spec.widths
  if config.name == 'rate_cae':
    if isinstance(rate, bool) or rate not in RATES:
      raise ConfigError(f'model.rate must be one of {", ".join(map(str, RATES))} (how many '
                        f'times height and width shrink), got {rate!r}.')
    default_widths = rate_widths(rate)
    if min(image_shape[:2]) < rate:
      raise ConfigError(f'model.rate={rate} shrinks {image_shape[0]}x{image_shape[1]} images '
                        'below one pixel; choose a smaller --config.model.rate.')
  widths = tuple(config.get('widths') or default_widths)
  if config.name in CLASSIFIERS:
    widths = ()
    if num_classes < 2:
      raise ConfigError(f'{config.name} classifies, but the data set has {num_classes} '
                        'class(es); use a data set with labels of at least two classes.')
  elif len(widths) != len(default_widths) and not spec.any_stages:
    raise ConfigError(
        f'model.widths for {config.name} needs {len(default_widths)} entries (one per stage), '
        f'got {widths}; e.g. --config.model.widths="{default_widths}".')
  return widths, rate


def _blocks(config, widths) -> tuple[int, ...]:
  """res_cae's residual blocks per stage: model.stage_blocks, else model.blocks at each."""
  blocks = config.get('blocks', 1)
  if not _is_count(blocks):
    raise ConfigError(f'model.blocks must be an integer >= 0 (residual blocks per stage), '
                      f'got {blocks!r}.')
  stage_blocks = tuple(config.get('stage_blocks', ()))
  # Only res_cae has stages of blocks; other models ignore it, as they ignore model.blocks
  # (so --config.model.name=cae works on cifar10_best256's config).
  if config.name == 'res_cae' and stage_blocks and (
      len(stage_blocks) != len(widths) or not all(map(_is_count, stage_blocks))):
    raise ConfigError(
        f'model.stage_blocks must be empty (model.blocks at every stage) or one integer >= 0 '
        f'per stage of model.widths={tuple(widths)}, got {stage_blocks!r}.')
  return stage_blocks or (blocks,) * len(widths)


def build_model(config, image_shape, num_classes: int = 10) -> nn.Module:
  """Builds the model named `config.name` for inputs of `image_shape` (H, W, C).

  `config` fields: name, latent_dim, widths (empty = the model's own), hidden_dim,
  activation, negative_slope, batch_norm, norm ('batch' or 'group': which one batch_norm
  turns on), dropout_rate, skips, dtype ('float32' or 'bfloat16'; parameters stay float32
  either way), transposed_conv ('subpixel' or
  'dilated': two formulations of the same layer, see layers.ConvTranspose), conv_input_grad
  ('auto', 'subpixel' or 'xla': how stride-2 convs compute their input gradient).
  """
  if config.name not in MODELS:
    raise unknown_name('model', config.name, MODELS)
  spec = MODELS[config.name]
  widths, rate = _widths(config, spec, image_shape, num_classes)
  skips = tuple(sorted(config.get('skips') or ()))
  if skips and not spec.allows_skips:
    raise ConfigError(f'model.skips is only supported by improved_cae (and its _res variants), not {config.name}; '
                      'set --config.model.skips="()".')
  if any(s not in range(1, len(widths) + 1) for s in skips):
    raise ConfigError(f'model.skips={skips} names stages outside 1..{len(widths)}.')
  dtype = config.get('dtype', 'float32')
  if dtype not in DTYPES:
    raise unknown_name('dtype', dtype, DTYPES)
  transposed_conv = config.get('transposed_conv', 'subpixel')
  if transposed_conv not in TRANSPOSED_CONVS:
    raise unknown_name('transposed_conv', transposed_conv, TRANSPOSED_CONVS)
  conv_input_grad = config.get('conv_input_grad', 'auto')
  if conv_input_grad not in CONV_INPUT_GRADS:
    raise unknown_name('conv_input_grad', conv_input_grad, CONV_INPUT_GRADS)
  if conv_input_grad == 'auto':  # measured on CPU only so far: docs/speed.md
    conv_input_grad = 'subpixel' if jax.default_backend() == 'cpu' else 'xla'
  for key in ('latent_dim', 'hidden_dim'):
    if config.get(key, 1) <= 0:
      raise ConfigError(f'model.{key} must be a positive integer, got {config.get(key)}.')
  norm = config.get('norm', 'batch')
  if norm not in NORMS:
    raise unknown_name('norm', norm, NORMS)
  blocks = _blocks(config, widths)
  code = config.get('code', 'spatial')
  if code not in CODES:
    raise unknown_name('model.code', code, CODES)
  if not 0.0 <= config.get('dropout_rate', 0.0) < 1.0:
    raise ConfigError(f'model.dropout_rate must be in [0, 1), got {config.dropout_rate}.')
  opts = ModelOptions(
      image_shape=tuple(int(d) for d in image_shape),
      latent_dim=config.get('latent_dim', 256),
      widths=widths,
      hidden_dim=config.get('hidden_dim', 512),
      activation=config.get('activation', 'relu'),
      negative_slope=config.get('negative_slope', 0.01),
      batch_norm=config.get('batch_norm', True),
      norm=norm,
      dropout_rate=config.get('dropout_rate', 0.0),
      skips=skips,
      encoder_residual=spec.encoder_residual,
      dtype=DTYPES[dtype],
      transposed_conv=transposed_conv,
      conv_input_grad=conv_input_grad,
      rate=rate if config.name == 'rate_cae' else 0,
      num_classes=num_classes if config.name in CLASSIFIERS else 0,
      init=spec.init,
      blocks=blocks,
      code=code,
  )
  opts.act  # fails early, with the valid names, on an unknown activation
  if config.name == 'res_cae' and code == 'spatial':
    h, w, _ = ae.res_code_channels(opts)
    if opts.latent_dim % (h * w):
      raise ConfigError(
          f'model.latent_dim={opts.latent_dim} is not a whole number of channels on res_cae\'s '
          f'{h}x{w} code (its {len(widths)} stages halve {image_shape[0]}x{image_shape[1]} '
          f'{len(widths) - 1} times); use a multiple of {h * w}, e.g. {4 * h * w}.')
  if spec.task == 'classification':
    return ae.Classifier(opts, spec.encoder)
  module = {'rate_distortion': balle.Balle2017, 'variational': ae.VAE}.get(spec.task,
                                                                         ae.Autoencoder)
  return module(opts, spec.encoder, spec.decoder)


def bottleneck(model: nn.Module) -> dict | None:
  """The floats that pass from encoder to decoder for one image, and the compression ratio.

  Computed from the shapes of the code the encoder really returns (no FLOPs spent),
  so skip tensors count. ratio = input floats / bottleneck floats; < 1 means the
  "code" holds more numbers than the image.
  """
  if isinstance(model, ae.Classifier):
    return None  # a classifier has no code
  shape = model.opts.image_shape
  x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
  key = jax.random.key(0)
  code = jax.eval_shape(
      lambda x: model.init_with_output({'params': key, 'dropout': key}, x, method='encode')[0], x)
  parts = {k: math.prod(v.shape[1:]) for k, v in code.items()}
  floats = sum(parts.values())
  inputs = math.prod(shape)
  return {'floats': floats, 'parts': parts, 'input_floats': inputs,
          'compression_ratio': inputs / floats}


def describe_bottleneck(b: dict | None) -> str:
  if b is None:
    return 'no bottleneck: a classifier'
  parts = ' + '.join(f'{k} {v}' for k, v in b['parts'].items())
  text = (f"bottleneck: {b['floats']} floats ({parts}) for an input of {b['input_floats']}, "
          f"compression ratio {b['compression_ratio']:.2f}x")
  if b['compression_ratio'] <= 1:
    text += ' (the decoder receives at least as many numbers as the image holds: nothing is compressed)'
  return text


def model_options(model) -> dict:
  d = dataclasses.asdict(model.opts)
  d['dtype'] = jnp.dtype(d['dtype']).name
  return d
