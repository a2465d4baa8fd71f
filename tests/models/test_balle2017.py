"""Balle, Laparra and Simoncelli 2017: GDN, the learned factorized density, the rate-distortion
loss, and that the model's bits are what the range coder writes from its table."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from flax_cae.training import tasks
from flax_cae.codec.bitstream import CodeModel
from flax_cae.models import balle2017 as balle, build_model
from flax_cae.runtime.xla import init_variables


def codec(widths=(8, 8, 8), shape=(25, 25, 3)):
  c = default.get_config()
  c.model.update(name='balle2017', widths=widths)
  model = build_model(c.model, shape)
  x = jax.random.uniform(jax.random.key(0), (3, *shape))
  return c, model, x, init_variables(model, {'params': jax.random.key(1)}, x)


def test_shapes_quantization_and_bits():
  _, model, x, v = codec()
  # Compiled, not op by op (eager, each op compiles its own program).
  y = jax.jit(lambda v, x: model.apply(v, x, method='encode'))(v, x)['latent']
  assert y.shape == (3, 4, 4, 8)  # 25 -> 13 -> 7 -> 4
  out = jax.jit(model.apply)(v, x)
  assert out['reconstruction'].shape == x.shape and out['bits'].shape == (3,)
  # Evaluation decodes the rounded code; training a noisy one, different on each key.
  decode = jax.jit(lambda v, y: model.apply(v, {'latent': jnp.round(y)}, method='decode'))
  np.testing.assert_allclose(out['reconstruction'], decode(v, y), atol=1e-6)
  noisy = jax.jit(lambda v, key: model.apply(v, x, train=True, rngs={'sample': key})['bits'])
  a, b = (noisy(v, jax.random.key(k)) for k in (2, 3))
  assert not np.allclose(a, b)


def test_fast_convs_compute_the_same_codec_as_xla():
  """Sub-pixel transposed convs and input gradients (the CPU default) against XLA's forms,
  on a 13x10 image (odd and even sides): same code, bits, pixels and parameter gradients."""
  c = default.get_config()
  c.model.update(name='balle2017', widths=(8, 8, 8), transposed_conv='subpixel',
                 conv_input_grad='subpixel')
  fast = build_model(c.model, (13, 10, 3))
  c.model.update(transposed_conv='dilated', conv_input_grad='xla')
  ref = build_model(c.model, (13, 10, 3))
  x = jax.random.uniform(jax.random.key(0), (2, 13, 10, 3))
  v = init_variables(fast, {'params': jax.random.key(1)}, x)

  def loss(model):
    def f(v):
      out = model.apply(v, x, train=True, rngs={'sample': jax.random.key(2)})
      return jnp.mean((out['reconstruction'] - x) ** 2) + 1e-3 * jnp.mean(out['bits'])
    return f
  # Compiled, not op by op: one program per formulation (eager, each op compiles its own).
  (value, grads), (ref_value, ref_grads) = (jax.jit(jax.value_and_grad(loss(m)))(v)
                                            for m in (fast, ref))
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


def test_gdn_and_its_inverse_undo_each_other():
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 4))
  gdn = balle.GDN()
  v = init_variables(gdn, jax.random.key(1), x)
  y = gdn.apply(v, x)
  assert float(jnp.abs(y).max()) < float(jnp.abs(x).max())  # divisive: it shrinks
  # The inverse with the same parameters, applied to y, multiplies by the norm of y, so
  # only for a diagonal gamma and |x| small is it near x; check the defining formula instead.
  beta, gamma = v['params']['beta'], v['params']['gamma']
  norm = jnp.sqrt(beta ** 2 + 1e-6 + (x ** 2) @ (gamma ** 2))
  np.testing.assert_allclose(y, x / norm, rtol=1e-5)
  np.testing.assert_allclose(balle.GDN(inverse=True).apply(v, x), x * norm, rtol=1e-5)


def test_density_is_a_distribution_and_its_table_codes_the_models_bits():
  _, model, x, v = codec()
  table = balle.discretized_density(model, v, np.full(8, -2000), 4001)
  np.testing.assert_allclose(table.sum(1), 1.0, atol=1e-3)
  y_hat = np.round(np.asarray(model.apply(v, x, method='encode')['latent']))
  low = np.full(8, -300)  # wide: the untrained density is wide, and the table is renormalized
  cm = CodeModel.from_density(balle.discretized_density(model, v, low, 601), low)
  bits = np.asarray(model.apply(v, x)['bits'])
  for image, b in zip(y_hat.astype(np.int32), bits):
    data = cm.encode(image)
    np.testing.assert_array_equal(cm.decode(data, image.shape), image)
    # The table's ideal length is the model's bits; the stream is within a few bytes of it.
    assert abs(cm.bits(image) - b) < 0.01 * b and len(data) <= cm.bits(image) / 8 + 8


def test_rate_distortion_loss_is_bpp_plus_lambda_times_squared_error():
  c, model, x, v = codec()
  c.loss.rd_lambda = 0.02
  task = tasks.get_task(c)
  assert isinstance(task, tasks.RateDistortion) and 'bpp' in task.metric_names
  out = model.apply(v, x)
  loss = task.loss(out, x, task.default_weights)
  mse = jnp.mean(jnp.square(out['reconstruction'] - x), axis=(1, 2, 3))
  np.testing.assert_allclose(loss, out['bits'] / (25 * 25) + 0.02 * 255 ** 2 * mse, rtol=1e-5)
