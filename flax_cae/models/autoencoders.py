"""The convolutional autoencoders of the S0 and S1 studies (see docs in each class).

Every model is an `Autoencoder`: an encoder that maps images [B, H, W, C] in [0, 1]
to a *code* (a dict of arrays) and a decoder that sees nothing but that code.
Whatever crosses from encoder to decoder is in the code, so its size is the
model's true bottleneck (`flax_cae.models.bottleneck`), skip tensors included.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_cae.models.layers import (ConvTranspose, ModelOptions, conv_out_size,
                                    conv_subpixel_input_grad, max_pool_2x2,
                                    norm_act_dropout)


def _conv(features, stride, opts, name=None):
  return nn.Conv(features, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)),
                 dtype=opts.dtype, param_dtype=jnp.float32, name=name,
                 kernel_init=opts.kernel_init,
                 conv_general_dilated=(conv_subpixel_input_grad
                                       if stride == 2 and opts.conv_input_grad == 'subpixel'
                                       else None))


def _dense(features, opts, name=None):
  return nn.Dense(features, dtype=opts.dtype, param_dtype=jnp.float32, name=name)


def _stage_sizes(opts: ModelOptions, strides) -> list[tuple[int, int]]:
  """Spatial size of the input and of each encoder stage's output."""
  sizes = [tuple(opts.image_shape[:2])]
  for s in strides:
    sizes.append(tuple(conv_out_size(d, s) for d in sizes[-1]))
  return sizes


def _decoder_widths(opts: ModelOptions) -> list[int]:
  """Output channels of the decoder's transposed convs: the encoder's widths in reverse,
  ending at the image's channel count."""
  return list(reversed(opts.widths[:-1])) + [opts.image_shape[2]]


def _output(x):
  """Pixels in [0, 1], always float32 so losses and metrics are computed in full precision."""
  return nn.sigmoid(x.astype(jnp.float32))


# --- S0: "Convolutional autoencoder for CIFAR-10" ---------------------------------


class CAEEncoder(nn.Module):
  opts: ModelOptions

  @nn.compact
  def __call__(self, x, train: bool = False):
    o = self.opts
    for w in o.widths:
      x = _conv(w, 1, o)(x)
      x = norm_act_dropout(x, o, train)
      # Pooling rounds up, so odd sizes (25 -> 13 -> 7 -> 4) lose no pixels.
      x = max_pool_2x2(x)
    z = _dense(o.latent_dim, o)(x.reshape(x.shape[0], -1))
    return {'latent': z}


class CAEDecoder(nn.Module):
  opts: ModelOptions

  @nn.compact
  def __call__(self, code, train: bool = False):
    o = self.opts
    sizes = _stage_sizes(o, [2] * len(o.widths))
    h, w = sizes[-1]
    x = _dense(h * w * o.widths[-1], o)(code['latent'])
    x = o.act(x).reshape(-1, h, w, o.widths[-1])
    out_widths = _decoder_widths(o)
    for i, (feat, target) in enumerate(zip(out_widths, reversed(sizes[:-1]))):
      x = ConvTranspose(feat, 2, target, o.dtype, o.transposed_conv)(x)
      if i < len(out_widths) - 1:
        x = norm_act_dropout(x, o, train)
    return _output(x)


# --- S1: "Exploring Enhanced Architectures for Convolutional Autoencoders" ---------


class BaseCAEEncoder(nn.Module):
  """S1's BaseCAE encoder: conv(16,s2)+BN+ReLU, conv(32,s2)+BN+ReLU, conv(64,s2), dense(hidden)+ReLU, dense(latent)."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, x, train: bool = False):
    o = self.opts
    for i, w in enumerate(o.widths):
      x = _conv(w, 2, o)(x)
      if i < len(o.widths) - 1:  # the last conv feeds the dense layers directly
        x = norm_act_dropout(x, o, train)
    x = x.reshape(x.shape[0], -1)
    x = norm_act_dropout(_dense(o.hidden_dim, o)(x), o, train, norm=False)
    return {'latent': _dense(o.latent_dim, o)(x)}


class BaseCAEDecoder(nn.Module):
  """Mirror of the encoder: dense(hidden)+ReLU, dense(flat), then stride-2 transposed convs."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, code, train: bool = False):
    o = self.opts
    sizes = _stage_sizes(o, [2] * len(o.widths))
    h, w = sizes[-1]
    x = norm_act_dropout(_dense(o.hidden_dim, o)(code['latent']), o, train, norm=False)
    x = _dense(h * w * o.widths[-1], o)(x).reshape(-1, h, w, o.widths[-1])
    out_widths = _decoder_widths(o)
    n = len(out_widths)
    for i, (feat, target) in enumerate(zip(out_widths, reversed(sizes[:-1]))):
      x = ConvTranspose(feat, 2, target, o.dtype, o.transposed_conv)(x)
      if i < n - 1:
        # S1's code orders the last hidden stage ReLU-then-BN; kept as written.
        x = norm_act_dropout(x, o, train, norm_first=(i < n - 2))
    return _output(x)


def _encoder_residual(x, y, opts: ModelOptions):
  """S1's "skips inside the encoder": the stage's input x, resized to its output y's shape,
  is added to y. 'interpolate': bilinear resize (antialiased when shrinking) and zero
  channels appended; 'resample': a 1x1 conv with the stage's stride (a learned projection).
  Nothing here crosses to the decoder, so the bottleneck is unchanged."""
  if opts.encoder_residual == 'interpolate':
    r = jax.image.resize(x, (*x.shape[:1], *y.shape[1:3], x.shape[3]), 'bilinear')
    r = jnp.pad(r, ((0, 0), (0, 0), (0, 0), (0, y.shape[3] - x.shape[3])))
  else:
    stride = -(-x.shape[1] // y.shape[1])
    r = nn.Conv(y.shape[3], (1, 1), strides=(stride, stride), dtype=opts.dtype,
                param_dtype=jnp.float32, name=None)(x)
  return y + r.astype(y.dtype)


class ImprovedCAEEncoder(nn.Module):
  """S1's ImprovedCAE encoder: conv 16/32/64 stride 2 with BN+LeakyReLU, conv 128 stride 1
  with LeakyReLU, one dense layer to the latent. Returns the stage outputs named in
  `opts.skips` (1-4) too, when skips across the bottleneck are on."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, x, train: bool = False):
    o = self.opts
    code = {}
    strides = [2] * (len(o.widths) - 1) + [1]
    for stage, (w, s) in enumerate(zip(o.widths, strides), start=1):
      y = norm_act_dropout(_conv(w, s, o)(x), o, train, norm=stage < len(o.widths))
      x = _encoder_residual(x, y, o) if o.encoder_residual else y
      if stage in o.skips:
        code[f'skip{stage}'] = x
    code['latent'] = _dense(o.latent_dim, o)(x.reshape(x.shape[0], -1))
    return code


class ImprovedCAEDecoder(nn.Module):
  """Mirror of the ImprovedCAE encoder. With skips, encoder stage k's output is added to
  the input of the decoder stage that mirrors it (enc4 -> dec1, ..., enc1 -> dec4);
  S1's code dropped the enc2 skip by a typo, we keep all that `opts.skips` names."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, code, train: bool = False):
    o = self.opts
    n = len(o.widths)
    strides = [2] * (n - 1) + [1]
    sizes = _stage_sizes(o, strides)
    h, w = sizes[-1]
    x = _dense(h * w * o.widths[-1], o)(code['latent']).reshape(-1, h, w, o.widths[-1])
    x = norm_act_dropout(x, o, train, norm=False)
    out_widths = _decoder_widths(o)
    for i, feat in enumerate(out_widths):
      stage = n - i  # the encoder stage this decoder stage mirrors
      if f'skip{stage}' in code:
        x = x + code[f'skip{stage}']
      x = ConvTranspose(feat, strides[stage - 1], sizes[stage - 1], o.dtype,
                        o.transposed_conv)(x)
      if i < n - 1:
        x = norm_act_dropout(x, o, train)
    return _output(x)


# --- res_cae: a residual CAE whose code beats PCA -------------------------------------------------


class ResBlock(nn.Module):
  """(norm, act, conv 3x3) twice, added to the input: depth without a longer gradient path."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, x, train: bool = False):
    o = self.opts
    y = x
    for _ in range(2):
      y = _conv(x.shape[-1], 1, o)(norm_act_dropout(y, o, train))
    return x + y


def res_code_channels(opts: ModelOptions) -> tuple[int, int, int]:
  """(H, W, C) of res_cae's spatial code: the last stage's size, latent_dim / (H * W) channels."""
  h, w = _stage_sizes(opts, [2] * (len(opts.widths) - 1))[-1]
  return h, w, opts.latent_dim // (h * w)


class ResCAEEncoder(nn.Module):
  """A conv stem, then per stage (widths) a stride-2 conv (not the first) and that stage's
  `blocks` residual blocks; a 1x1 conv to a spatial code of latent_dim floats (H x W x C), or
  with code='dense' one dense layer to latent_dim floats. The code is the only thing the
  decoder gets (no skips across it)."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, x, train: bool = False):
    o = self.opts
    x = _conv(o.widths[0], 1, o)(x.astype(o.dtype))
    for i, w in enumerate(o.widths):
      if i:
        x = _conv(w, 2, o)(norm_act_dropout(x, o, train))
      for _ in range(o.blocks[i]):
        x = ResBlock(o)(x, train)
    x = norm_act_dropout(x, o, train)
    if o.code == 'dense':  # one vector: each float may draw on the whole image, as PCA's do
      return {'latent': _dense(o.latent_dim, o)(x.reshape(x.shape[0], -1))}
    c = res_code_channels(o)[2]
    return {'latent': nn.Conv(c, (1, 1), dtype=o.dtype, param_dtype=jnp.float32)(x)}


class ResCAEDecoder(nn.Module):
  """The encoder's mirror: a conv (or with code='dense' a dense layer) from the code, per stage
  its `blocks` residual blocks and a stride-2 transposed conv (not the last), a conv to the
  image's channels."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, code, train: bool = False):
    o = self.opts
    n = len(o.widths)
    sizes = _stage_sizes(o, [2] * (n - 1))
    if o.code == 'dense':
      h, w = sizes[-1]
      x = _dense(h * w * o.widths[-1], o)(code['latent']).reshape(-1, h, w, o.widths[-1])
    else:
      x = _conv(o.widths[-1], 1, o)(code['latent'])
    for i in reversed(range(n)):
      for _ in range(o.blocks[i]):
        x = ResBlock(o)(x, train)
      if i:
        x = ConvTranspose(o.widths[i - 1], 2, sizes[i - 1], o.dtype, o.transposed_conv)(
            norm_act_dropout(x, o, train))
    x = _conv(o.image_shape[2], 1, o)(norm_act_dropout(x, o, train))
    return _output(x)


# --- S2: "Convolutional autoencoder and learnings on image compression" --------------


def rate_stages(rate: int) -> int:
  """log2 of S2's compression rate: the number of stride-2 stages."""
  return int(rate).bit_length() - 1


class RateCAEEncoder(nn.Module):
  """S2's CAE encoder: log2(rate) stages of conv 3x3 + ReLU + 2x2 max-pool; the code is the
  last stage's map, [H / rate, W / rate, widths[-1]] (S2: 32x4x4 at rate 8)."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, x, train: bool = False):
    o = self.opts
    for w in o.widths:
      x = max_pool_2x2(norm_act_dropout(_conv(w, 1, o)(x), o, train))
    return {'latent': x}


class RateCAEDecoder(nn.Module):
  """S2's decoder: per stage, nearest-neighbour upsampling to the mirrored encoder size and a
  conv 3x3 (+ ReLU), the last conv to the image's channels and a sigmoid."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, code, train: bool = False):
    o = self.opts
    sizes = _stage_sizes(o, [2] * len(o.widths))
    x = code['latent']
    out_widths = _decoder_widths(o)
    for i, (feat, (h, w)) in enumerate(zip(out_widths, reversed(sizes[:-1]))):
      x = jax.image.resize(x, (x.shape[0], h, w, x.shape[3]), 'nearest')
      x = _conv(feat, 1, o)(x)
      if i < len(out_widths) - 1:
        x = norm_act_dropout(x, o, train)
    return _output(x)


# --- S3: "A better autoencoder for image: convolutional autoencoder" --------------------


class FCEncoder(nn.Module):
  """S3's SimpleAE (fully connected): flatten, dense hidden_dim + activation, dense to the
  code (latent_dim)."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, x, train: bool = False):
    o = self.opts
    x = norm_act_dropout(_dense(o.hidden_dim, o)(x.reshape(x.shape[0], -1)), o, train, norm=False)
    return {'latent': _dense(o.latent_dim, o)(x)}


class FCDecoder(nn.Module):
  """Mirror of FCEncoder: dense hidden_dim + activation, dense to every pixel, sigmoid."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, code, train: bool = False):
    o = self.opts
    x = norm_act_dropout(_dense(o.hidden_dim, o)(code['latent']), o, train, norm=False)
    x = _dense(math.prod(o.image_shape), o)(x)
    return _output(x).reshape(-1, *o.image_shape)


# --- S4: "Autoencoder" assignment report (colored MNIST) -------------------------------


class StridedConvEncoder(nn.Module):
  """S4's AE encoder: stride-2 3x3 convs (128, 64, 32, 16) + ReLU (+ BatchNorm and dropout
  after every layer for S4's second model: model.batch_norm, model.dropout_rate); the code
  is the last map, 2x2x16 for 28x28 digits."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, x, train: bool = False):
    o = self.opts
    for w in o.widths:
      x = norm_act_dropout(_conv(w, 2, o)(x), o, train)
    return {'latent': x}


def _transposed_stages(x, o: ModelOptions, sizes, train):
  """Stride-2 transposed convs back through the encoder's sizes to the image's channels,
  norm/activation/dropout between them (S4's AE and VAE decoders)."""
  out_widths = _decoder_widths(o)
  for i, (feat, target) in enumerate(zip(out_widths, reversed(sizes[:-1]))):
    x = ConvTranspose(feat, 2, target, o.dtype, o.transposed_conv, o.transposed_kernel_init(2))(x)
    if i < len(out_widths) - 1:
      x = norm_act_dropout(x, o, train)
  return x


class StridedConvDecoder(nn.Module):
  """Mirror of StridedConvEncoder: stride-2 transposed convs back through the widths (32, 64, 128)
  and a last one to the image's channels (four in all), ReLU between, sigmoid output."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, code, train: bool = False):
    o = self.opts
    sizes = _stage_sizes(o, [2] * len(o.widths))
    x = code['latent']
    return _output(_transposed_stages(x, o, sizes, train))


class VAEEncoder(nn.Module):
  """S4's VAE encoder: stride-2 3x3 convs (widths) + activation, then two dense heads: the
  posterior's mean and log-variance (latent_dim each)."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, x, train: bool = False):
    o = self.opts
    for w in o.widths:
      x = norm_act_dropout(_conv(w, 2, o)(x), o, train)
    x = x.reshape(x.shape[0], -1)
    return {'mean': _dense(o.latent_dim, o, name='mean')(x).astype(jnp.float32),
            'logvar': _dense(o.latent_dim, o, name='logvar')(x).astype(jnp.float32)}


class VAEDecoder(nn.Module):
  """Dense to the last encoder map + activation, then stride-2 transposed convs, sigmoid."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, code, train: bool = False):
    o = self.opts
    sizes = _stage_sizes(o, [2] * len(o.widths))
    h, w = sizes[-1]
    x = _dense(h * w * o.widths[-1], o)(code['latent']).reshape(-1, h, w, o.widths[-1])
    x = norm_act_dropout(x, o, train, norm=False)
    return _output(_transposed_stages(x, o, sizes, train))


# --- S2's classifier ----------------------------------------------------------------


class LeNet5(nn.Module):
  """LeNet-5 as S2 (and PyTorch's CIFAR-10 tutorial) use it: conv 5x5 (6) + ReLU + 2x2
  max-pool, conv 5x5 (16) + ReLU + 2x2 max-pool, dense 120, 84 (ReLU), dense to the classes.
  Inputs smaller than 32x32 (MNIST's 28x28) are zero-padded to 32x32, as LeCun padded MNIST."""
  opts: ModelOptions

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    o = self.opts
    h, w = x.shape[1:3]
    ph, pw = max(0, 32 - h), max(0, 32 - w)
    x = jnp.pad(x.astype(o.dtype), ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2),
                                     (0, 0)))
    for features in (6, 16):
      x = nn.Conv(features, (5, 5), padding='VALID', dtype=o.dtype, param_dtype=jnp.float32)(x)
      x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    for features in (120, 84):
      x = nn.relu(_dense(features, o)(x))
    return _dense(o.num_classes, o)(x).astype(jnp.float32)


class Classifier(nn.Module):
  """A classifier in the registry's shape: `__call__` returns {'logits': [B, classes]}."""
  opts: ModelOptions
  net_cls: type

  def setup(self):
    self.net = self.net_cls(self.opts)

  def __call__(self, x, train: bool = False) -> dict:
    return {'logits': self.net(x, train)}


class Autoencoder(nn.Module):
  """An encoder/decoder pair. `__call__` returns a dict so other models (a VAE's mean and
  log-variance, say) can add outputs without changing the training loop."""
  opts: ModelOptions
  encoder_cls: type
  decoder_cls: type

  def setup(self):
    self.encoder = self.encoder_cls(self.opts)
    self.decoder = self.decoder_cls(self.opts)

  def encode(self, x, train: bool = False) -> dict:
    """[B, H, W, C] in [0, 1] -> code dict (everything the decoder will see)."""
    return self.encoder(x.astype(self.opts.dtype), train)

  def decode(self, code: dict, train: bool = False):
    """code dict -> reconstruction [B, H, W, C], float32 in [0, 1]."""
    return self.decoder(code, train)

  def __call__(self, x, train: bool = False) -> dict:
    return {'reconstruction': self.decode(self.encode(x, train), train)}


def input_floats(image_shape) -> int:
  return math.prod(image_shape)


class VAE(Autoencoder):
  """A variational autoencoder: the code is z ~ N(mean, exp(logvar)) while training (the
  reparameterisation trick, noise from the 'sample' stream of each step) and the mean
  otherwise. `encode` returns the mean as the code, so the bottleneck, the t-SNE maps and the
  interpolations of flax_cae.visualize use it; outputs carry mean and log-variance for the KL."""

  def encode(self, x, train: bool = False) -> dict:
    return {'latent': self.encoder(x.astype(self.opts.dtype), train)['mean']}

  def __call__(self, x, train: bool = False) -> dict:
    posterior = self.encoder(x.astype(self.opts.dtype), train)
    mean, logvar = posterior['mean'], posterior['logvar']
    z = mean
    if train:
      eps = jax.random.normal(self.make_rng('sample'), mean.shape, mean.dtype)
      z = mean + jnp.exp(0.5 * logvar) * eps
    return {'reconstruction': self.decode({'latent': z}, train), 'mean': mean, 'logvar': logvar}
