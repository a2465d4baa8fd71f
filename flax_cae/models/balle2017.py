"""Balle, Laparra and Simoncelli, "End-to-end Optimized Image Compression" (ICLR 2017,
arXiv:1611.01704): a learned codec.

Analysis transform g_a: stride-2 5x5 convs with GDN between them; synthesis g_s: its mirror
with inverse GDN. The code y is quantized to integers: while training by adding uniform
noise in [-0.5, 0.5) (the paper's differentiable stand-in), otherwise by rounding. Its rate
is -log2 p(y_hat) under a factorized density, one per channel, learned with the rest:
the cumulative c(x) = sigmoid(f_K(...f_1(x))), each f_k a monotone affine map with a tanh
gate (Balle et al. 2018, appendix 6.1), so p(y_hat) = c(y_hat + 1/2) - c(y_hat - 1/2).
The loss (tasks.RateDistortion) is rate + lambda * distortion; `bits` per image is an output.
Pixels come out through a sigmoid, as every model here, so metrics see [0, 1].
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flax_cae.models.layers import ModelOptions, SameConvTranspose, conv_subpixel_input_grad

LIKELIHOOD_FLOOR = 1e-9  # no symbol costs more than ~30 bits (keeps log2 finite)
FILTERS = (3, 3, 3)      # the factorized density's hidden widths (Balle et al. 2018)


class GDN(nn.Module):
  """Generalized divisive normalization: y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)
  (inverse: times the same). beta and gamma are kept positive as squares of parameters."""
  inverse: bool = False

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    beta = self.param('beta', nn.initializers.ones, (c,), jnp.float32)
    gamma = self.param('gamma', lambda k, s, d: jnp.sqrt(0.1) * jnp.eye(s[0], dtype=d), (c, c),
                       jnp.float32)
    x32 = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.square(beta) + 1e-6 + jnp.square(x32) @ jnp.square(gamma))
    return (x32 * norm if self.inverse else x32 / norm).astype(x.dtype)


class FactorizedDensity(nn.Module):
  """One learned univariate density per channel; `logits_cdf(x)` for x [..., C]."""
  channels: int

  def setup(self):
    dims = (1, *FILTERS, 1)
    scale = 10.0 ** (1 / (len(FILTERS) + 1))  # the paper's init: a wide density at the start
    self.matrices = [self.param(f'matrix{i}', nn.initializers.constant(
        math.log(math.expm1(1 / scale / dims[i + 1]))), (self.channels, dims[i + 1], dims[i]))
                     for i in range(len(dims) - 1)]
    self.biases = [self.param(f'bias{i}', lambda k, s: jax.random.uniform(k, s, minval=-0.5,
                                                                          maxval=0.5),
                              (self.channels, dims[i + 1], 1)) for i in range(len(dims) - 1)]
    self.factors = [self.param(f'factor{i}', nn.initializers.zeros,
                               (self.channels, dims[i + 1], 1)) for i in range(len(FILTERS))]

  def logits_cdf(self, x):
    shape = x.shape
    h = jnp.moveaxis(x.astype(jnp.float32).reshape(-1, shape[-1]), -1, 0)[:, None, :]  # [C, 1, N]
    for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
      h = jnp.matmul(jax.nn.softplus(m), h) + b
      if i < len(self.factors):
        h = h + jnp.tanh(self.factors[i]) * jnp.tanh(h)
    return jnp.moveaxis(h[:, 0, :], 0, -1).reshape(shape)

  def likelihood(self, y):
    """P(y - 1/2 < Y < y + 1/2) per element, computed where the sigmoid does not saturate."""
    lower, upper = self.logits_cdf(y - 0.5), self.logits_cdf(y + 0.5)
    sign = jax.lax.stop_gradient(-jnp.sign(lower + upper))
    p = jnp.abs(jax.nn.sigmoid(sign * upper) - jax.nn.sigmoid(sign * lower))
    return jnp.maximum(p, LIKELIHOOD_FLOOR)

  def __call__(self, y):
    return self.likelihood(y)


def _conv(features, opts, name=None):
  """A stride-2 5x5 conv; its input gradient in sub-pixel form where model.conv_input_grad
  says so (the CPU's default: layers.conv_subpixel_input_grad)."""
  return nn.Conv(features, (5, 5), strides=(2, 2), padding='SAME', dtype=opts.dtype,
                 param_dtype=jnp.float32, name=name,
                 conv_general_dilated=(conv_subpixel_input_grad
                                       if opts.conv_input_grad == 'subpixel' else None))


class BalleAnalysis(nn.Module):
  """g_a: per entry of widths a stride-2 5x5 conv, GDN between them; the last width is the
  code's channels (Balle 2017: N = M; here widths=(N, ..., M))."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    o = self.opts
    for i, w in enumerate(o.widths):
      x = _conv(w, o)(x)
      if i < len(o.widths) - 1:
        x = GDN()(x)
    return {'latent': x.astype(jnp.float32)}


class BalleSynthesis(nn.Module):
  """g_s: stride-2 5x5 transposed convs back through the analysis' sizes, inverse GDN
  between them, the last to the image's channels. The transposed convs run in sub-pixel form
  (model.transposed_conv='dilated': XLA's, the reference): on the CPU XLA's form, 3/4 of
  whose multiply-adds hit inserted zeros, made the synthesis 84% of a training step."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, code, train: bool = False):
    del train
    o = self.opts
    sizes = [tuple(o.image_shape[:2])]
    for _ in o.widths:
      sizes.append(tuple(-(-d // 2) for d in sizes[-1]))
    x = code['latent'].astype(o.dtype)
    outs = list(reversed(o.widths[:-1])) + [o.image_shape[2]]
    for i, (feat, (h, w)) in enumerate(zip(outs, reversed(sizes[:-1]))):
      x = SameConvTranspose(feat, 5, o.dtype, o.transposed_conv, name=f'ConvTranspose_{i}')(
          x)[:, :h, :w]
      if i < len(outs) - 1:
        x = GDN(inverse=True)(x)
    return nn.sigmoid(x.astype(jnp.float32))


class Balle2017(nn.Module):
  """The codec: `encode` gives the continuous code y (its floats are the bottleneck),
  `__call__` quantizes it (noise while training, rounding otherwise) and returns the
  reconstruction from y_hat and the bits of each image under the learned density."""
  opts: ModelOptions
  encoder_cls: type = BalleAnalysis
  decoder_cls: type = BalleSynthesis

  def setup(self):
    self.encoder = self.encoder_cls(self.opts)
    self.decoder = self.decoder_cls(self.opts)
    self.density = FactorizedDensity(self.opts.widths[-1])

  def encode(self, x, train: bool = False) -> dict:
    return self.encoder(x.astype(self.opts.dtype), train)

  def decode(self, code: dict, train: bool = False):
    return self.decoder(code, train)

  def quantize(self, y, train: bool = False):
    if train:
      return y + jax.random.uniform(self.make_rng('sample'), y.shape, y.dtype, -0.5, 0.5)
    return jnp.round(y)

  def __call__(self, x, train: bool = False) -> dict:
    y = self.encode(x, train)['latent']
    y_hat = self.quantize(y, train)
    bits = -jnp.sum(jnp.log2(self.density(y_hat)), axis=(1, 2, 3))
    return {'reconstruction': self.decode({'latent': y_hat}, train), 'bits': bits}


def discretized_density(model: Balle2017, variables: dict, low: np.ndarray,
                        size: int) -> np.ndarray:
  """The learned density as a table: probs [C, size] of the integers low[c] .. low[c] +
  size - 1 per channel (what the range coder needs; flax_cae.codec.bitstream.CodeModel)."""
  c = len(low)
  grid = (np.asarray(low)[:, None] + np.arange(size)[None, :]).T.astype(np.float32)  # [size, C]
  p = model.apply(variables, jnp.asarray(grid), method=lambda m, y: m.density(y))
  return np.asarray(p, np.float64).T.reshape(c, size)
