"""Building blocks shared by the autoencoders: activations and size-aware up-sampling."""

import dataclasses
import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_cae.runtime.errors import ConfigError, unknown_name

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
  norm: str = 'batch'  # which normalisation batch_norm turns on: 'batch' | 'group' (GroupNorm)
  dropout_rate: float = 0.0
  skips: tuple[int, ...] = ()
  dtype: Any = jnp.float32
  encoder_residual: str = ''  # improved_cae_res_*: '' | 'interpolate' | 'resample' (S1's tries)
  transposed_conv: str = 'subpixel'  # or 'dilated' (XLA's zero-insertion form); same function
  conv_input_grad: str = 'xla'  # or 'subpixel' (conv_subpixel_input_grad); same gradients
  rate: int = 0  # rate_cae: S2's compression rate (how much height and width shrink)
  init: str = 'lecun'  # conv kernels: 'lecun' (Flax's default) | 'he' (S4's deep ReLU stacks)
  num_classes: int = 0  # classifiers: the data set's number of classes
  blocks: tuple[int, ...] = ()  # res_cae: residual blocks at each stage of widths
  code: str = 'spatial'  # res_cae: 'spatial' (a 1x1 conv to H x W x C) | 'dense' (one vector)

  @property
  def kernel_init(self):
    return nn.initializers.he_normal() if self.init == 'he' else nn.initializers.lecun_normal()

  def transposed_kernel_init(self, stride: int):
    """He's init for a transposed conv: each output pixel sees only 9 / stride**2 of the
    kernel's taps, so the variance is scaled up by stride**2 (else a decoder of four of
    them hands the sigmoid a signal 256x weaker than its bias, and training stalls on the
    mean image)."""
    if self.init != 'he':
      return nn.initializers.lecun_normal()
    return nn.initializers.variance_scaling(2.0 * stride * stride, 'fan_in', 'truncated_normal')

  @property
  def act(self) -> Callable:
    return get_activation(self.activation, self.negative_slope)


def conv_out_size(size: int, stride: int) -> int:
  """Spatial size after a 3x3 conv with padding 1 (or a 2x2 'SAME' max-pool): ceil(size / stride)."""
  return -(-size // stride)


NORMS = ('batch', 'group')
CODES = ('spatial', 'dense')  # res_cae's code layer
TRANSPOSED_CONVS = ('subpixel', 'dilated')
CONV_INPUT_GRADS = ('auto', 'subpixel', 'xla')
_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _xla_conv_s2(x, kernel, padding):
  return jax.lax.conv_general_dilated(x, kernel, (2, 2), padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_s2(x, kernel, padding):
  return _xla_conv_s2(x, kernel, padding)


def _conv_s2_fwd(x, kernel, padding):
  return _xla_conv_s2(x, kernel, padding), (x, kernel)


def _conv_s2_bwd(padding, residuals, dy):
  """Kernel gradient from XLA; input gradient as the stride-2 transposed conv it is, in
  sub-pixel form: XLA convolves a zero-dilated dy instead (4x the multiply-adds)."""
  x, kernel = residuals
  dk = jax.vjp(lambda k: _xla_conv_s2(x, k, padding), kernel)[1](dy)[0]
  # dx[2o + t - before] += dy[o] k[t]: with the kernel flipped in space (in/out swapped)
  # that is conv_transpose_subpixel's form with pad = size - 1 - before. Zero rows after
  # dy reach the input rows past 2 * len(dy) that only the kernel's far taps touch.
  h, w = x.shape[1:3]
  extra = [max(0, -(-(d - 2 * o) // 2)) for d, o in zip((h, w), dy.shape[1:3])]
  dy = jnp.pad(dy, ((0, 0), (0, extra[0]), (0, extra[1]), (0, 0)))
  pads = tuple(k - 1 - p[0] for k, p in zip(kernel.shape[:2], padding))
  dx = conv_transpose_subpixel(dy, jnp.flip(kernel, (0, 1)).swapaxes(2, 3), pads)
  return dx[:, :h, :w], dk


_conv_s2.defvjp(_conv_s2_fwd, _conv_s2_bwd)


def conv_subpixel_input_grad(lhs, rhs, window_strides, padding, lhs_dilation=None,
                             rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                             precision=None, preferred_element_type=None):
  """lax.conv_general_dilated's signature (nn.Conv's `conv_general_dilated`) for a stride-2
  conv, NHWC, any kernel size and padding ('SAME', 'VALID' or explicit): the same
  convolution, with _conv_s2_bwd's input gradient."""
  del dimension_numbers, precision, preferred_element_type  # flax passes NHWC / defaults
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (2, 2), padding)
  padding = tuple(tuple(int(p) for p in pad) for pad in padding)
  if (tuple(window_strides) != (2, 2) or feature_group_count != 1
      or any(d not in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))):
    raise ValueError('conv_subpixel_input_grad takes stride-2 convs without dilation or groups.')
  return _conv_s2(lhs, rhs, padding)


class _TransposedConvParams(nn.Module):
  """nn.ConvTranspose's parameters (names, shapes, initialisers): both formulations below
  share them, so checkpoints and parameter counts do not depend on the choice."""
  features: int
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, in_features: int):
    kernel = self.param('kernel', self.kernel_init,
                        (3, 3, in_features, self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    return kernel, bias


def _phase_taps(size: int, pad: int) -> dict[int, dict[int, int]]:
  """Sub-pixel taps of a stride-2 transposed conv with a `size`-tap kernel: XLA's form (a
  conv of the unflipped kernel over the input dilated by 2 and padded by `pad` in front)
  gives y[2m + p] = sum of x[m + a] k[t] over t with p + t - pad = 2a.
  {output phase p: {input offset a: kernel index t}}, the same for columns."""
  return {p: {(p + t - pad) // 2: t for t in range(size) if (p + t - pad) % 2 == 0}
          for p in (0, 1)}


def _offsets(size: int, pad: int) -> list[int]:
  return sorted({a for p in _phase_taps(size, pad).values() for a in p})


def subpixel_kernel(kernel: jax.Array, pad: int | tuple[int, int] = 1) -> jax.Array:
  """[k, k, Cin, Cout] transposed-conv kernel -> [n, n', Cin, 4 * Cout] stride-1 conv kernel
  (n input offsets) whose output channel (2 * ph + pw) * Cout + c is output pixel
  (2m + ph, 2n + pw)'s c. `pad`: one for rows and columns, or (rows, columns)."""
  pr, pc = (pad, pad) if isinstance(pad, int) else pad
  rows, cols = _phase_taps(kernel.shape[0], pr), _phase_taps(kernel.shape[1], pc)
  zero = jnp.zeros_like(kernel[0, 0])
  return jnp.stack([jnp.stack([jnp.concatenate([
      kernel[rows[ph][a], cols[pw][b]] if a in rows[ph] and b in cols[pw] else zero
      for ph in (0, 1) for pw in (0, 1)], axis=-1) for b in _offsets(kernel.shape[1], pc)])
      for a in _offsets(kernel.shape[0], pr)])


def conv_transpose_subpixel(x: jax.Array, kernel: jax.Array,
                            pad: int | tuple[int, int] = 1) -> jax.Array:
  """Stride-2 transposed conv as one stride-1 conv with 4x the channels, then
  depth-to-space: [B, h, w, Cin] -> [B, 2h, 2w, Cout]. Same function as the zero-dilated
  form, without the multiply-adds on inserted zeros (3x3: 9 taps instead of 36; 5x5: 25
  instead of 100). pad=1 with a 3x3 kernel is PyTorch's padding=1; see _phase_taps."""
  bsz, h, w, _ = x.shape
  cout = kernel.shape[-1]
  pr, pc = (pad, pad) if isinstance(pad, int) else pad
  padding = [(-o[0], o[-1]) for o in (_offsets(kernel.shape[0], pr), _offsets(kernel.shape[1], pc))]
  z = jax.lax.conv_general_dilated(x, subpixel_kernel(kernel, (pr, pc)), (1, 1), padding,
                                   dimension_numbers=_NHWC)
  z = z.reshape(bsz, h, w, 2, 2, cout).transpose(0, 1, 3, 2, 4, 5)
  return z.reshape(bsz, 2 * h, 2 * w, cout)


class SameConvTranspose(nn.Module):
  """nn.ConvTranspose(features, (k, k), strides=(2, 2), padding='SAME') with the same
  parameters (names, shapes, initialisers), computed as a sub-pixel conv: [B, h, w, Cin] ->
  [B, 2h, 2w, features]. formulation='dilated' runs XLA's transposed conv (the reference)."""
  features: int
  kernel_size: int = 5
  dtype: Any = jnp.float32
  formulation: str = 'subpixel'

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
    if self.formulation == 'subpixel':
      y = conv_transpose_subpixel(x, kernel, pad=min(k - 1, (k + 1) // 2))  # lax's 'SAME'
    else:
      y = jax.lax.conv_transpose(x, kernel, (2, 2), 'SAME', dimension_numbers=_NHWC)
    return y + bias


def conv_transpose_dilated(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """The reference: XLA's transposed conv (a conv over a zero-dilated input), as
  nn.ConvTranspose(padding='VALID') computes it, then PyTorch's padding=1 crop."""
  y = jax.lax.conv_transpose(x, kernel, (stride, stride), 'VALID', dimension_numbers=_NHWC)
  return y[:, 1:, 1:]


class ConvTranspose(nn.Module):
  """3x3 transposed convolution that produces an exact target size.

  Same function as PyTorch's `ConvTranspose2d(kernel_size=3, stride=s, padding=1,
  output_padding=op)` with `op` picked per call: the full transposed conv gives
  (in - 1) * s + 3 pixels, of which we keep [1, 1 + target). Any target in
  [s * in - s + 1, s * in] is reachable, which covers every size an encoder of
  stride-s convs (ceil division) produced. Input [B, h, w, Cin] -> [B, H, W, features].
  Stride 2 runs as a sub-pixel conv and stride 1 as the plain 3x3 conv it equals (kernel
  unflipped, padding 1), unless `formulation='dilated'` (XLA's transposed conv, the
  reference).
  """
  features: int
  stride: int
  target: tuple[int, int]
  dtype: Any = jnp.float32
  formulation: str = 'subpixel'
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    s = self.stride
    kernel, bias = _TransposedConvParams(self.features, self.kernel_init,
                                         name='ConvTranspose_0')(x.shape[-1])
    th, tw = self.target
    if th > s * x.shape[1] or tw > s * x.shape[2]:
      raise ConfigError(
          f'A stride-{s} transposed conv cannot grow {x.shape[1:3]} to {self.target}; '
          'the encoder and decoder strides do not match.')
    x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
    if s == 2 and self.formulation == 'subpixel':
      y = conv_transpose_subpixel(x, kernel)
    elif s == 1 and self.formulation == 'subpixel':
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_NHWC)
    else:
      y = conv_transpose_dilated(x, kernel, s)
    return y[:, :th, :tw] + bias


def max_pool_2x2(x):
  """2x2 stride-2 max-pooling that rounds up (odd sizes are padded with -inf at the end, as
  nn.max_pool(padding='SAME') does), written as a reshape and a max: XLA's CPU backend runs
  the max_pool gradient (select-and-scatter) several times slower. Same
  outputs; same gradients except where a window holds tied maxima, which share the
  gradient instead of one taking it all."""
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
  return x.reshape(b, (h + 1) // 2, 2, (w + 1) // 2, 2, c).max(axis=(2, 4))


def norm_act_dropout(x, opts: ModelOptions, train: bool, *, norm: bool = True,
                     act: bool = True, norm_first: bool = True):
  """BatchNorm or GroupNorm (if on) and activation in the given order, then dropout (if > 0)."""
  def bn(h):
    if not (norm and opts.batch_norm):
      return h
    if opts.norm == 'group':  # per image, so no running statistics: 32 groups (or fewer)
      return nn.GroupNorm(num_groups=math.gcd(32, h.shape[-1]), epsilon=1e-5,
                          dtype=opts.dtype, param_dtype=jnp.float32)(h)
    # momentum 0.9 in Flax == momentum 0.1 in PyTorch (the papers' code).
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=opts.dtype, param_dtype=jnp.float32)(h)
  a = opts.act if act else (lambda h: h)
  x = a(bn(x)) if norm_first else bn(a(x))
  if opts.dropout_rate > 0 and act:
    x = nn.Dropout(opts.dropout_rate, deterministic=not train)(x)
  return x
