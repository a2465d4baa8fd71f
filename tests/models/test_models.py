"""Shapes, bottleneck counts and options of every model at 28x28x1 and 32x32x3 (and odd sizes)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from flax_cae import models
from flax_cae.models import layers
from flax_cae.runtime.errors import ConfigError
from flax_cae.models.layers import (TRANSPOSED_CONVS, ConvTranspose, SameConvTranspose,
                                    conv_subpixel_input_grad, max_pool_2x2)
from flax_cae.runtime.xla import init_variables


def cfg(**kw):
  base = dict(name='improved_cae', latent_dim=256, widths=(), hidden_dim=512,
              activation='leaky_relu', negative_slope=0.01, batch_norm=True,
              dropout_rate=0.0, skips=(), dtype='float32')
  base.update(kw)
  return ml_collections.ConfigDict(base)


def n_params(variables):
  return sum(x.size for x in jax.tree.leaves(variables['params']))


# Expected bottleneck floats: the latent, plus every skip tensor (H*W*C of its stage).
# 32x32x3 S1 ImprovedCAE stages: 16x16x16, 8x8x32, 4x4x64, 4x4x128.
# 28x28x1: 14x14x16, 7x7x32, 4x4x64, 4x4x128.
CASES = [
    ('cae', (), (28, 28, 1), 256),
    ('cae', (), (32, 32, 3), 256),
    ('base_cae', (), (28, 28, 1), 256),
    ('base_cae', (), (32, 32, 3), 256),
    ('improved_cae', (), (28, 28, 1), 256),
    ('improved_cae', (), (32, 32, 3), 256),
    ('improved_cae', (1, 2, 3, 4), (28, 28, 1), 256 + 14 * 14 * 16 + 7 * 7 * 32 + 4 * 4 * 64 + 4 * 4 * 128),
    ('improved_cae', (1, 2, 3, 4), (32, 32, 3), 256 + 4096 + 2048 + 1024 + 2048),
    ('improved_cae', (1, 3, 4), (32, 32, 3), 256 + 4096 + 1024 + 2048),  # S1 code's typo
]


@pytest.mark.parametrize('name,skips,shape,floats', CASES)
def test_shapes_and_bottleneck(name, skips, shape, floats):
  model = models.build_model(cfg(name=name, skips=skips), shape)
  x = jax.random.uniform(jax.random.key(0), (3, *shape))
  variables = init_variables(model, {'params': jax.random.key(1)}, x)
  y = model.apply(variables, x)['reconstruction']
  assert y.shape == x.shape and y.dtype == jnp.float32
  assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
  b = models.bottleneck(model)
  assert b['floats'] == floats
  assert b['input_floats'] == np.prod(shape)
  assert b['compression_ratio'] == pytest.approx(np.prod(shape) / floats)
  code = model.apply(variables, x, method='encode')
  assert sum(np.prod(v.shape[1:]) for v in code.values()) == floats


def test_skip_model_reports_more_floats_than_the_image():
  model = models.build_model(cfg(skips=(1, 2, 3, 4)), (32, 32, 3))
  b = models.bottleneck(model)
  assert b['floats'] > 32 * 32 * 3 and b['compression_ratio'] < 1
  assert 'nothing is compressed' in models.describe_bottleneck(b)


def test_s1_base_cae_parameter_count():
  # Hand count of S1's BaseCAE at 32x32x3 (latent 256, hidden 512, BN scale+bias per channel):
  conv = lambda cin, cout: 9 * cin * cout + cout
  dense = lambda a, b: a * b + b
  enc = conv(3, 16) + 32 + conv(16, 32) + 64 + conv(32, 64) + dense(1024, 512) + dense(512, 256)
  dec = (dense(256, 512) + dense(512, 1024) + conv(64, 32) + 64 + conv(32, 16) + 32
         + conv(16, 3))
  model = models.build_model(cfg(name='base_cae', activation='relu'), (32, 32, 3))
  variables = init_variables(model, {'params': jax.random.key(0)}, jnp.zeros((1, 32, 32, 3)))
  assert n_params(variables) == enc + dec


def test_skips_change_the_output_and_carry_encoder_features():
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  plain = models.build_model(cfg(), (32, 32, 3))
  skip = models.build_model(cfg(skips=(1, 2, 3, 4)), (32, 32, 3))
  v = init_variables(plain, {'params': jax.random.key(1)}, x)
  # Same parameters: the skip model only adds tensors, no weights.
  v2 = init_variables(skip, {'params': jax.random.key(1)}, x)
  assert jax.tree.structure(v) == jax.tree.structure(v2)
  y1 = plain.apply(v, x)['reconstruction']
  y2 = skip.apply(v, x)['reconstruction']
  assert float(jnp.abs(y1 - y2).max()) > 1e-4


@pytest.mark.parametrize('shape', [(25, 25, 1), (64, 48, 3), (17, 33, 2)])
@pytest.mark.parametrize('name', models.autoencoder_names())
def test_any_input_size(name, shape):
  latent = 16
  if name == 'res_cae':  # a spatial code: 2 channels on its ceil(H / 4) x ceil(W / 4) grid
    latent = 2 * -(-shape[0] // 4) * -(-shape[1] // 4)
  model = models.build_model(cfg(name=name, latent_dim=latent, hidden_dim=32), shape)
  x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
  y, _ = jax.eval_shape(lambda x: model.init_with_output({'params': jax.random.key(0)}, x), x)
  assert y['reconstruction'].shape == x.shape


def test_every_activation_is_the_one_applied():
  """The same parameters and images give a different output under each activation (and
  LeakyReLU's slope is applied): the setting reaches the layers."""
  x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
  v = init_variables(models.build_model(cfg(), (28, 28, 1)), {'params': jax.random.key(0)}, x)
  outputs = {}
  for activation, slope in [(a, 0.01) for a in layers.ACTIVATIONS] + [('leaky_relu', 0.2)]:
    model = models.build_model(cfg(activation=activation, negative_slope=slope), (28, 28, 1))
    outputs[activation, slope] = np.asarray(model.apply(v, x)['reconstruction'])
  names = list(outputs)
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      assert np.abs(outputs[a] - outputs[b]).max() > 1e-6, (a, b)  # (the same one: 0)


def test_batch_norm_off_has_no_batch_stats_and_dropout_needs_rng():
  model = models.build_model(cfg(batch_norm=False, dropout_rate=0.5), (28, 28, 1))
  x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
  v = init_variables(model, {'params': jax.random.key(0)}, x)
  assert 'batch_stats' not in v
  a = model.apply(v, x, train=True, rngs={'dropout': jax.random.key(1)})['reconstruction']
  b = model.apply(v, x, train=True, rngs={'dropout': jax.random.key(2)})['reconstruction']
  c = model.apply(v, x, train=False)['reconstruction']
  assert float(jnp.abs(a - b).max()) > 1e-4            # dropout is on in training
  assert jnp.allclose(c, model.apply(v, x)['reconstruction'])  # and off at eval


def test_bfloat16_compute_keeps_float32_params():
  model = models.build_model(cfg(dtype='bfloat16'), (32, 32, 3))
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  v = init_variables(model, {'params': jax.random.key(0)}, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v['params']))
  y = model.apply(v, x)['reconstruction']
  assert y.dtype == jnp.float32
  ref = models.build_model(cfg(), (32, 32, 3)).apply(v, x)['reconstruction']
  assert float(jnp.abs(y - ref).max()) < 0.05   # same function, lower precision


@pytest.mark.parametrize('formulation', TRANSPOSED_CONVS)
def test_conv_transpose_matches_pytorch_definition(formulation):
  """out[o] = sum_{i, t: o = s*i - 1 + t} x[i] * w[t] (PyTorch ConvTranspose2d, padding 1),
  with the kernel as Flax stores it flipped, checked against a direct numpy loop."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 3, 4, 2)).astype(np.float32)
  layer = ConvTranspose(features=5, stride=2, target=(6, 7), formulation=formulation)
  v = init_variables(layer, jax.random.key(0), x)
  y = np.asarray(layer.apply(v, x))
  w = np.asarray(v['params']['ConvTranspose_0']['kernel'])[::-1, ::-1]  # -> PyTorch orientation
  bias = np.asarray(v['params']['ConvTranspose_0']['bias'])
  ref = np.zeros((1, 6, 7, 5), np.float32) + bias
  for i in range(3):
    for j in range(4):
      for ti in range(3):
        for tj in range(3):
          oi, oj = 2 * i - 1 + ti, 2 * j - 1 + tj
          if 0 <= oi < 6 and 0 <= oj < 7:
            ref[0, oi, oj] += x[0, i, j] @ w[ti, tj]
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def _outputs_and_grads(layers: dict, v, x):
  """Each layer's output on x and the gradients of sum(sin(output)) in (v, x), by name."""
  outs, grads = {}, {}
  for f, layer in layers.items():
    def loss(v, x, layer=layer):
      return jnp.sum(jnp.sin(layer.apply(v, x)))
    outs[f] = layer.apply(v, x)
    grads[f] = jax.grad(loss, argnums=(0, 1))(v, x)
  return outs, grads


@pytest.mark.parametrize('stride,size,target', [
    (2, (4, 4), (8, 8)), (2, (4, 4), (7, 7)), (2, (7, 5), (13, 10)), (2, (1, 1), (2, 1)),
    (1, (4, 4), (4, 4)), (1, (5, 3), (5, 3))])
def test_fast_transposed_conv_equals_the_dilated_reference(stride, size, target):
  """The fast layer (sub-pixel for stride 2, a plain conv for stride 1) and XLA's
  zero-dilated transposed conv: same outputs and gradients on random inputs and weights, at
  even and odd target sizes."""
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (3, *size, 6))
  layers = {f: ConvTranspose(features=4, stride=stride, target=target, formulation=f)
            for f in TRANSPOSED_CONVS}
  v = init_variables(layers['dilated'], keys[1], x)
  v = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(keys[2], p.shape), v)  # bias too
  assert jax.tree.structure(init_variables(layers['subpixel'], keys[1], x)) == jax.tree.structure(v)
  outs, grads = _outputs_and_grads(layers, v, x)
  assert outs['subpixel'].shape == (3, *target, 4)
  np.testing.assert_allclose(outs['subpixel'], outs['dilated'], rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(grads['subpixel']), jax.tree.leaves(grads['dilated'])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kernel_size,size', [(5, (4, 4)), (5, (3, 5)), (5, (1, 1)), (3, (4, 3)),
                                               (4, (3, 3)), (7, (2, 5))])
def test_same_transposed_conv_equals_flax_conv_transpose(kernel_size, size):
  """Balle's layer in sub-pixel form and flax's nn.ConvTranspose(padding='SAME') with the
  same parameters: same parameter tree, outputs and gradients, odd and even kernels."""
  keys = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(keys[0], (2, *size, 5))
  flax_layer = nn.ConvTranspose(3, (kernel_size,) * 2, strides=(2, 2), padding='SAME')
  v = init_variables(flax_layer, keys[1], x)
  v = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(keys[2], p.shape), v)  # bias too
  layers = {'flax': flax_layer}
  for f in TRANSPOSED_CONVS:
    layers[f] = SameConvTranspose(3, kernel_size, formulation=f)
    assert jax.tree.structure(init_variables(layers[f], keys[1], x)) == jax.tree.structure(v)
  outs, grads = _outputs_and_grads(layers, v, x)
  assert outs['subpixel'].shape == (2, 2 * size[0], 2 * size[1], 3)
  for f in TRANSPOSED_CONVS:
    np.testing.assert_allclose(outs[f], outs['flax'], rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(grads[f]), jax.tree.leaves(grads['flax'])):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('shape,kernel,padding', [
    (shape, kernel, padding)
    for shape in [(2, 9, 8, 5), (3, 16, 16, 3), (2, 7, 5, 4), (1, 1, 1, 2)]
    for kernel, padding in [(3, ((1, 1), (1, 1))), (5, 'SAME'), (5, 'VALID'),
                            (4, ((2, 1), (0, 3))), (3, ((0, 0), (2, 1)))]
    if padding != 'VALID' or min(shape[1:3]) >= kernel])  # VALID needs the kernel to fit
def test_conv_subpixel_input_grad_equals_xla_conv(shape, kernel, padding):
  """Stride-2 conv with the sub-pixel input gradient: same value, input and kernel
  gradients as XLA's own, at even and odd sizes, for S1's 3x3 convs, Balle's 5x5 'SAME'
  and uneven kernels and paddings."""
  keys = jax.random.split(jax.random.key(len(shape) + shape[1]), 2)
  x = jax.random.normal(keys[0], shape)
  k = jax.random.normal(keys[1], (kernel, kernel, shape[-1], 7))
  args = ((2, 2), padding)
  dn = ('NHWC', 'HWIO', 'NHWC')

  def loss(conv):
    return lambda x, k: jnp.sum(jnp.sin(conv(x, k, *args, dimension_numbers=dn)))
  ours = jax.value_and_grad(loss(conv_subpixel_input_grad), argnums=(0, 1))(x, k)
  ref = jax.value_and_grad(loss(jax.lax.conv_general_dilated), argnums=(0, 1))(x, k)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('shape', [(2, 8, 8, 3), (2, 7, 5, 4), (1, 1, 1, 2)])
def test_max_pool_2x2_equals_flax_max_pool(shape):
  x = jax.random.normal(jax.random.key(0), shape)  # continuous values: no tied maxima

  def loss(pool):
    return lambda x: jnp.sum(jnp.sin(pool(x)))
  flax_pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2), padding='SAME')
  np.testing.assert_array_equal(max_pool_2x2(x), flax_pool(x))
  np.testing.assert_allclose(jax.grad(loss(max_pool_2x2))(x), jax.grad(loss(flax_pool))(x),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # (long: README, -m slow)
def test_models_with_either_formulation_are_the_same_function():
  x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
  for name in ('base_cae', 'improved_cae', 'cae'):
    fast = models.build_model(cfg(name=name, conv_input_grad='subpixel'), (28, 28, 1))
    ref = models.build_model(cfg(name=name, transposed_conv='dilated', conv_input_grad='xla'),
                             (28, 28, 1))
    v = init_variables(fast, {'params': jax.random.key(0), 'dropout': jax.random.key(0)}, x)

    def loss(model):
      return lambda v: jnp.mean(model.apply(v, x)['reconstruction'] ** 2)
    np.testing.assert_allclose(fast.apply(v, x)['reconstruction'],
                               ref.apply(v, x)['reconstruction'], rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(jax.grad(loss(fast))(v)), jax.tree.leaves(jax.grad(loss(ref))(v))):
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6, err_msg=name)


@pytest.mark.parametrize('bad,match', [
    (dict(name='resnet'), 'valid model names are: balle2017, base_cae, cae, conv_vae, fc_ae, improved_cae'),
    (dict(activation='swish2'), 'valid activation names'),
    (dict(name='base_cae', skips=(1,)), 'only supported by improved_cae'),
    (dict(skips=(5,)), 'outside 1..4'),
    (dict(widths=(8, 16)), 'needs 4 entries'),
    (dict(dtype='float16'), 'valid dtype names'),
    (dict(transposed_conv='fft'), 'valid transposed_conv names are: dilated, subpixel'),
    (dict(conv_input_grad='fast'), 'valid conv_input_grad names are: auto, subpixel, xla'),
    (dict(latent_dim=0), 'latent_dim must be a positive'),
])
def test_bad_model_config(bad, match):
  with pytest.raises(ConfigError, match=match):
    models.build_model(cfg(**bad), (32, 32, 3))


@pytest.mark.parametrize('rate,floats', [(2, 16 * 16 * 32), (4, 8 * 8 * 32), (8, 4 * 4 * 32),
                                         (16, 2 * 2 * 32)])
def test_rate_cae_code_shrinks_height_and_width_by_the_rate(rate, floats):
  """S2: rate r = how many times height and width shrink; 32 code channels (32x4x4 at r=8)."""
  model = models.build_model(cfg(name='rate_cae', rate=rate), (32, 32, 3))
  b = models.bottleneck(model)
  assert b['floats'] == floats and b['parts'] == {'latent': floats}
  v = init_variables(model, {'params': jax.random.key(0)}, jnp.zeros((2, 32, 32, 3)))
  code = model.apply(v, jnp.zeros((2, 32, 32, 3)), method='encode')['latent']
  assert code.shape == (2, 32 // rate, 32 // rate, 32)
  y = model.apply(v, jax.random.uniform(jax.random.key(1), (2, 32, 32, 3)))['reconstruction']
  assert y.shape == (2, 32, 32, 3) and float(y.min()) >= 0 and float(y.max()) <= 1


@pytest.mark.parametrize('bad', [3, 0, 32, True])
def test_rate_cae_refuses_other_rates(bad):
  with pytest.raises(ConfigError, match='model.rate must be one of 2, 4, 8, 16'):
    models.build_model(cfg(name='rate_cae', rate=bad), (32, 32, 3))


@pytest.mark.parametrize('shape,params', [((32, 32, 3), 62006), ((28, 28, 1), 61706)])
def test_lenet5_is_lenet5(shape, params):
  """LeNet-5's parameter count (62,006 for 32x32x3 and 10 classes, as in PyTorch's CIFAR-10
  tutorial; 28x28 inputs are padded to 32x32, so MNIST's count differs only in conv1)."""
  model = models.build_model(cfg(name='lenet5'), shape, num_classes=10)
  v = init_variables(model, {'params': jax.random.key(0)}, jnp.zeros((1, *shape)))
  assert sum(a.size for a in jax.tree.leaves(v['params'])) == params
  assert model.apply(v, jnp.zeros((4, *shape)))['logits'].shape == (4, 10)
  assert models.bottleneck(model) is None
  with pytest.raises(ConfigError, match='class'):
    models.build_model(cfg(name='lenet5'), shape, num_classes=1)


@pytest.mark.parametrize('widths,latent,code_shape', [((8, 16, 16), 256, (8, 8, 4)),
                                                       ((8, 16, 16, 16), 64, (4, 4, 4)),
                                                       ((8, 16), 28 * 28 // 4, (14, 14, 1))])
def test_res_cae_code_is_a_spatial_latent_of_latent_dim_floats(widths, latent, code_shape):
  """res_cae: the code is one H x W x C tensor of exactly latent_dim floats."""
  shape = (28, 28, 1) if code_shape[0] == 14 else (32, 32, 3)
  model = models.build_model(cfg(name='res_cae', widths=widths, latent_dim=latent, blocks=2,
                                 batch_norm=False, activation='gelu'), shape)
  x = jax.random.uniform(jax.random.key(0), (2, *shape))
  variables = init_variables(model, {'params': jax.random.key(1)}, x)
  code = model.apply(variables, x, method='encode')
  assert list(code) == ['latent'] and code['latent'].shape == (2, *code_shape)
  assert models.bottleneck(model)['floats'] == latent
  assert model.apply(variables, code, method='decode').shape == x.shape
  # Two residual blocks per stage, encoder and decoder: 2 convs each.
  assert res_block_convs(variables) == 2 * len(widths) * 2 * 2


def test_res_cae_dense_code_is_one_vector_of_latent_dim_floats():
  """model.code=dense: the last stage's map goes through one dense layer to latent_dim floats
  (any number, not only a whole number of channels on the grid), which is all the decoder
  gets; the spatial 1x1 conv is gone."""
  shape = (32, 32, 3)
  model = models.build_model(cfg(name='res_cae', widths=(8, 16, 16), latent_dim=50,
                                 stage_blocks=(0, 0, 1), code='dense'), shape)
  x = jax.random.uniform(jax.random.key(0), (2, *shape))
  variables = init_variables(model, {'params': jax.random.key(1)}, x)
  code = model.apply(variables, x, method='encode')
  assert list(code) == ['latent'] and code['latent'].shape == (2, 50)
  assert models.bottleneck(model)['floats'] == 50
  assert model.apply(variables, code, method='decode').shape == x.shape
  dense = {v.shape for p, v in jax.tree_util.tree_leaves_with_path(variables['params'])
           if 'Dense' in jax.tree_util.keystr(p) and p[-1].key == 'kernel'}
  assert dense == {(8 * 8 * 16, 50), (50, 8 * 8 * 16)}
  # Each code float sees the whole image: changing one corner pixel moves every float.
  y = x.at[:, 0, 0, :].add(0.5)
  moved = model.apply(variables, y, method='encode')['latent'] != code['latent']
  assert bool(moved.all())


def res_block_convs(variables):
  return len([p for p in jax.tree_util.tree_leaves_with_path(variables['params'])
              if 'ResBlock' in jax.tree_util.keystr(p[0]) and p[0][-1].key == 'kernel'])


def test_res_cae_stage_blocks_put_residual_blocks_at_the_stages_named():
  """model.stage_blocks=(0, 1, 2): no block at 32x32, one at 16x16, two at 8x8 (where depth
  is cheap); the code is unchanged."""
  shape = (32, 32, 3)
  x = jax.random.uniform(jax.random.key(0), (2, *shape))
  model = models.build_model(cfg(name='res_cae', widths=(8, 16, 16), latent_dim=256,
                                 stage_blocks=(0, 1, 2), blocks=5), shape)
  variables = init_variables(model, {'params': jax.random.key(1)}, x)
  assert res_block_convs(variables) == (0 + 1 + 2) * 2 * 2  # stage_blocks wins over blocks
  kernels = {jax.tree_util.keystr(p): v.shape for p, v in
             jax.tree_util.tree_leaves_with_path(variables['params'])
             if 'ResBlock' in jax.tree_util.keystr(p) and p[-1].key == 'kernel'}
  assert {k[-2:] for k in kernels.values()} == {(16, 16)}  # only the 16-channel stages
  assert model.apply(variables, x, method='encode')['latent'].shape == (2, 8, 8, 4)


def test_models_without_stages_of_blocks_ignore_stage_blocks():
  """cifar10_best256 sets stage_blocks=(0, 0, 1); --config.model.name=cae on that config
  builds a CAE (which has no residual blocks), as model.blocks is ignored there too."""
  from configs import cifar10_best256  # pylint: disable=g-import-not-at-top
  config = cifar10_best256.get_config()
  config.model.name, config.model.widths = 'cae', ()
  model = models.build_model(config.model, (32, 32, 3))
  variables = init_variables(model, {'params': jax.random.key(1)}, jnp.zeros((1, 32, 32, 3)))
  assert res_block_convs(variables) == 0


def test_group_norm_keeps_no_statistics_and_treats_each_image_alone():
  """model.norm=group (a lever of the best256 recipe): GroupNorm where batch_norm puts BatchNorm; it keeps
  no running statistics, so in training an image's output does not depend on its batch."""
  model = models.build_model(cfg(name='res_cae', widths=(8, 16, 32), latent_dim=64, norm='group',
                                 activation='gelu'), (16, 16, 3))
  x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
  v = init_variables(model, {'params': jax.random.key(1)}, x)
  assert 'batch_stats' not in v
  names = {jax.tree_util.keystr(p[:-1]) for p, _ in jax.tree_util.tree_leaves_with_path(v['params'])}
  assert any('GroupNorm' in n for n in names) and not any('BatchNorm' in n for n in names)
  train_apply = jax.jit(lambda v, x: model.apply(v, x, train=True)['reconstruction'])
  alone, in_batch = train_apply(v, x[:1]), train_apply(v, x)[:1]
  np.testing.assert_allclose(alone, in_batch, atol=1e-5)
  bn = models.build_model(cfg(name='res_cae', widths=(8, 16, 32), latent_dim=64,
                              activation='gelu'), (16, 16, 3))
  vb = init_variables(bn, {'params': jax.random.key(1)}, x)
  bn_apply = jax.jit(lambda v, x: bn.apply(v, x, train=True, mutable=['batch_stats'])[0])
  outs = [bn_apply(vb, xs)['reconstruction'][:1] for xs in (x[:1], x)]
  assert float(jnp.abs(outs[0] - outs[1]).max()) > 1e-4  # BatchNorm does depend on it
