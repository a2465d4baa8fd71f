"""Building blocks shared by the autoencoders: activations and size-aware up-sampling."""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from flax_cae.errors import ConfigError, unknown_name

ACTIVATIONS = ('relu', 'leaky_relu', 'gelu', 'tanh', 'sigmoid', 'elu', 'silu')


def get_activation(name: str, negative_slope: float = 0.01) -> Callable:
  """Activation by name; `negative_slope` is LeakyReLU's slope (S1 uses LeakyReLU)."""
  if name not in ACTIVATIONS:
    raise unknown_name('activation', name, ACTIVATIONS)
  if name == 'leaky_relu':
    return functools.partial(nn.leaky_relu, negative_slope=negative_slope)
  return getattr(nn, name)


@dataclasses.dataclass(frozen=True)
class ModelOptions:
  """Everything an encoder/decoder pair needs; one frozen value so modules stay hashable.

  `image_shape` is (height, width, channels) of the input; decoders use it to
  produce exactly that size, so no model needs a hand edit for 28x28 vs 32x32.
  """
  image_shape: tuple[int, int, int]
  latent_dim: int = 256
  widths: tuple[int, ...] = ()
  hidden_dim: int = 512
  activation: str = 'relu'
  negative_slope: float = 0.01
  batch_norm: bool = True
  dropout_rate: float = 0.0
  skips: tuple[int, ...] = ()
  dtype: Any = jnp.float32

  @property
  def act(self) -> Callable:
    return get_activation(self.activation, self.negative_slope)


def conv_out_size(size: int, stride: int) -> int:
  """Spatial size after a 3x3 conv with padding 1 (or a 2x2 'SAME' max-pool): ceil(size / stride)."""
  return -(-size // stride)


class ConvTranspose(nn.Module):
  """3x3 transposed convolution that produces an exact target size.

  Same function as PyTorch's `ConvTranspose2d(kernel_size=3, stride=s, padding=1,
  output_padding=op)` with `op` picked per call: the full transposed conv gives
  (in - 1) * s + 3 pixels, of which we keep [1, 1 + target). Any target in
  [s * in - s + 1, s * in] is reachable, which covers every size an encoder of
  stride-s convs (ceil division) produced. Input [B, h, w, Cin] -> [B, H, W, features].
  """
  features: int
  stride: int
  target: tuple[int, int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    s = self.stride
    y = nn.ConvTranspose(self.features, (3, 3), strides=(s, s), padding='VALID',
                         dtype=self.dtype, param_dtype=jnp.float32)(x)
    th, tw = self.target
    if th > y.shape[1] - 1 or tw > y.shape[2] - 1:
      raise ConfigError(
          f'A stride-{s} transposed conv cannot grow {x.shape[1:3]} to {self.target}; '
          'the encoder and decoder strides do not match.')
    return y[:, 1:1 + th, 1:1 + tw, :]


def norm_act_dropout(x, opts: ModelOptions, train: bool, *, norm: bool = True,
                     act: bool = True, norm_first: bool = True):
  """BatchNorm (if on) and activation in the given order, then dropout (if > 0)."""
  def bn(h):
    if not (norm and opts.batch_norm):
      return h
    # momentum 0.9 in Flax == momentum 0.1 in PyTorch (the papers' code).
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=opts.dtype, param_dtype=jnp.float32)(h)
  a = opts.act if act else (lambda h: h)
  x = a(bn(x)) if norm_first else bn(a(x))
  if opts.dropout_rate > 0 and act:
    x = nn.Dropout(opts.dropout_rate, deterministic=not train)(x)
  return x
