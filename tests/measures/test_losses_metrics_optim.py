"""Tests for flax_cae.measures (losses, metrics) and flax_cae.training.optim.

Numbers are checked against hand computations on tiny arrays and, for SSIM and
PSNR, against scikit-image on real CIFAR-10 and MNIST images.
"""

import gzip
import io
import math
from pathlib import Path
import tarfile

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict
import numpy as np
import optax
from PIL import Image
import pytest
from scipy import ndimage
import skimage.data
import skimage.metrics

from flax_cae.runtime import errors
from flax_cae.measures import losses
from flax_cae.measures import metrics
from flax_cae.training import optim

DATA_DIR = Path(__file__).resolve().parents[2].parent / 'shared' / 'data'
CIFAR_TAR = DATA_DIR / 'cifar10-jpeg-train.tar.gz'
MNIST_IMAGES = DATA_DIR / 'mnist' / 't10k-images-idx3-ubyte.gz'

# A 2x2x1 example small enough to compute by hand:
#   differences 0.25, -0.25, 0, 0.25 -> MSE 3 * 0.0625 / 4 = 0.046875,
#   L1 0.75 / 4 = 0.1875, PSNR 10 * log10(1 / 0.046875) = 13.2906 dB,
#   BCE (2 * log(4/3) + 2 * log(2)) / 4 = log(8/3) / 2.
RECON = np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)[..., None]
TARGET = np.array([[0.0, 1.0], [0.5, 0.25]], np.float32)[..., None]
HAND_MSE = 0.046875
HAND_L1 = 0.1875
HAND_PSNR = 10 * math.log10(1 / 0.046875)
HAND_BCE = math.log(8 / 3) / 2


def _hand_batch(tile: int = 1):
  """Batch of 2: the hand example, then a perfect reconstruction. [2,H,W,1]."""
  recon, target = (np.tile(x, (tile, tile, 1)) for x in (RECON, TARGET))
  return (jnp.asarray(np.stack([recon, target])),
          jnp.asarray(np.stack([target, target])))


# Real images ------------------------------------------------------------------


@pytest.fixture(scope='module')
def cifar_images():
  """8 CIFAR-10 training images, 2 from each of 4 classes: [8, 32, 32, 3]."""
  if not CIFAR_TAR.exists():
    pytest.skip(f'CIFAR-10 JPEGs not found at {CIFAR_TAR} (the shared data '
                'folder next to the repository).')
  wanted = {'airplane': 2, 'automobile': 2, 'bird': 2, 'cat': 2}
  images = []
  with tarfile.open(CIFAR_TAR) as tar:
    # The tar is ordered by class, so stop as soon as the last class is read
    # (about 0.8 s instead of 2 s for the whole archive).
    for member in tar:
      parts = member.name.split('/')
      if (member.isfile() and len(parts) == 3 and parts[2].endswith('.jpg')
          and wanted.get(parts[1], 0) > 0):
        wanted[parts[1]] -= 1
        with Image.open(io.BytesIO(tar.extractfile(member).read())) as image:
          images.append(np.asarray(image.convert('RGB')))
        if not any(wanted.values()):
          break
  return np.stack(images)


@pytest.fixture(scope='module')
def gray_batches():
  """Grayscale batches [N, H, W, 1] float32 in [0, 1]: MNIST digits, camera."""
  # The camera man is shipped inside scikit-image (no download); crops of it
  # add natural grayscale texture to the mostly flat digits.
  camera = skimage.data.camera()
  crops = np.stack([camera[100:148, 200:248], camera[300:348, 50:98]])
  batches = {'camera': crops[..., None].astype(np.float32) / 255}
  if MNIST_IMAGES.exists():
    with gzip.open(MNIST_IMAGES) as f:
      f.read(16)  # IDX header: magic, count, rows, cols.
      digits = np.frombuffer(f.read(6 * 28 * 28), np.uint8)
    batches['mnist'] = digits.reshape(6, 28, 28, 1).astype(np.float32) / 255
  return batches


# Jitted once per shape: eager SSIM dispatches op by op and is ~6x slower.
_image_metrics = jax.jit(metrics.image_metrics)


def _degraded(images: np.ndarray, seed: int = 0):
  """Noisy and blurred copies of float images [N, H, W, C] in [0, 1]."""
  rng = np.random.default_rng(seed)
  noisy = np.clip(images + rng.normal(0, 0.1, images.shape), 0, 1)
  blurred = ndimage.gaussian_filter(images, sigma=(0, 1.0, 1.0, 0))
  return {'noisy': noisy.astype(np.float32),
          'blurred': blurred.astype(np.float32)}


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
  """The SSIM definition of docs/performance.md, on one [H, W, C] image pair."""
  return skimage.metrics.structural_similarity(
      a.astype(np.float64), b.astype(np.float64), gaussian_weights=True,
      sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1)


# Losses ---------------------------------------------------------------------


@pytest.mark.parametrize('name, expected', [
    ('mse', HAND_MSE),
    ('l1', HAND_L1),
    ('bce', HAND_BCE),
    ('l1+mse', 0.1 * HAND_L1 + 1.0 * HAND_MSE),
])
def test_loss_matches_hand_computation(name, expected):
  recon, target = _hand_batch()
  loss = losses.get_loss(ConfigDict({'name': name}))(recon, target)
  assert loss.shape == (2,) and loss.dtype == jnp.float32
  np.testing.assert_allclose(loss[0], expected, rtol=1e-6)
  if name != 'bce':  # BCE of a perfect non-binary target is its entropy.
    assert loss[1] == 0.0


def test_l1_mse_weights_from_config():
  recon, target = _hand_batch()
  fn = losses.get_loss(
      ConfigDict({'name': 'l1+mse', 'alpha': 0.5, 'beta': 2.0}))
  np.testing.assert_allclose(fn(recon, target)[0],
                             0.5 * HAND_L1 + 2.0 * HAND_MSE, rtol=1e-6)
  # A missing key takes its default (beta = 1.0).
  fn = losses.get_loss(ConfigDict({'name': 'l1+mse', 'alpha': 0.5}))
  np.testing.assert_allclose(fn(recon, target)[0], 0.5 * HAND_L1 + HAND_MSE,
                             rtol=1e-6)


def test_neg_psnr_is_minus_the_reported_psnr(cifar_images):
  recon, target = _hand_batch()
  loss = losses.get_loss(ConfigDict({'name': 'neg_psnr'}))
  # The perfect reconstruction is capped at 100 dB by the MSE floor, not inf.
  np.testing.assert_allclose(loss(recon, target), [-HAND_PSNR, -100.0], rtol=1e-5)
  target = jnp.asarray(cifar_images, jnp.float32) / 255
  for kind, degraded in _degraded(np.asarray(target)).items():
    np.testing.assert_allclose(
        jax.jit(loss)(jnp.asarray(degraded), target),
        -_image_metrics(jnp.asarray(degraded), target)['psnr'], atol=1e-3, err_msg=kind)
  # Each image's MSE gradient is divided by its MSE: a 4x larger error (2x the
  # difference) gives half the gradient, where plain MSE gives twice the gradient.
  diff = jnp.full((2, 4, 4, 1), 0.1).at[1].set(0.2)
  zeros = jnp.zeros_like(diff)
  g_psnr = jax.grad(lambda r: loss(r, zeros).sum())(diff)
  g_mse = jax.grad(lambda r: losses.mse(r, zeros).sum())(diff)
  np.testing.assert_allclose(g_psnr[1] / g_psnr[0], 0.5, rtol=1e-5)
  np.testing.assert_allclose(g_mse[1] / g_mse[0], 2.0, rtol=1e-5)


def test_bce_clips_saturated_predictions():
  target = jnp.ones((1, 2, 2, 1))
  recon = jnp.zeros((1, 2, 2, 1))  # A sigmoid saturated at the wrong end.
  loss = losses.get_loss(ConfigDict({'name': 'bce'}))
  np.testing.assert_allclose(loss(recon, target), [-math.log(losses.BCE_EPS)],
                             rtol=1e-3)
  grad = jax.jit(jax.grad(lambda r: loss(r, target).sum()))(recon)
  assert np.all(np.isfinite(grad))


def test_ssim_losses(cifar_images):
  target = jnp.asarray(cifar_images[:4], jnp.float32) / 255
  recon = jnp.asarray(_degraded(np.asarray(target))['blurred'])
  ssim_loss = jax.jit(losses.get_loss(ConfigDict({'name': 'ssim'})))
  np.testing.assert_allclose(ssim_loss(target, target), 0.0, atol=1e-6)
  one_minus_ssim = ssim_loss(recon, target)
  assert np.all(one_minus_ssim > 0.02)
  combined = jax.jit(losses.get_loss(
      ConfigDict({'name': 'mse+ssim', 'ssim_weight': 0.5})))(recon, target)
  np.testing.assert_allclose(
      combined, losses.mse(recon, target) + 0.5 * one_minus_ssim, rtol=1e-6)
  # Gradients stay finite even at a perfect reconstruction of flat regions.
  flat = jnp.full((1, 16, 16, 1), 0.5)
  grad = jax.jit(jax.grad(lambda r: ssim_loss(r, flat).sum()))(flat)
  assert np.all(np.isfinite(grad))


@pytest.mark.parametrize('name', losses.loss_names())
def test_every_loss_is_per_example_float32_and_jittable(name):
  rng = np.random.default_rng(0)
  target = jnp.asarray(rng.uniform(size=(3, 12, 12, 2)), jnp.float32)
  recon = jnp.asarray(rng.uniform(size=(3, 12, 12, 2)), jnp.bfloat16)
  fn = losses.get_loss(ConfigDict({'name': name}))
  loss = jax.jit(fn)(recon, target)
  assert loss.shape == (3,) and loss.dtype == jnp.float32
  # Every loss but -PSNR is >= 0; -PSNR of images in [0, 1] is below 0.
  assert np.all((np.asarray(loss) < 0) if name == 'neg_psnr' else (np.asarray(loss) > 0))
  grad = jax.jit(jax.grad(lambda r: fn(r, target).mean()))(
      recon.astype(jnp.float32))
  assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_loss_config_errors():
  with pytest.raises(errors.ConfigError) as info:
    losses.get_loss(ConfigDict({'name': 'mae'}))
  for name in losses.loss_names():
    assert name in str(info.value)
  with pytest.raises(errors.ConfigError, match='alpha'):
    losses.get_loss(ConfigDict({'name': 'l1+mse', 'alpha': -0.1}))
  with pytest.raises(errors.ConfigError, match='11x11'):
    losses.get_loss(ConfigDict({'name': 'ssim'}))(*_hand_batch())


# Metrics --------------------------------------------------------------------


def test_image_metrics_match_hand_computation():
  # Tiling the 2x2 example 6x6 keeps MSE, L1 and PSNR and gives SSIM's window
  # room (12x12 >= 11x11).
  recon, target = _hand_batch(tile=6)
  values = jax.jit(metrics.image_metrics)(recon, target)
  assert set(values) == {'mse', 'l1', 'psnr', 'snr', 'ssim'}
  for value in values.values():
    assert value.shape == (2,) and value.dtype == jnp.float32
  np.testing.assert_allclose(values['mse'], [HAND_MSE, 0.0], rtol=1e-6)
  np.testing.assert_allclose(values['l1'], [HAND_L1, 0.0], rtol=1e-6)
  # The perfect reconstruction is capped at 100 dB instead of inf.
  np.testing.assert_allclose(values['psnr'], [HAND_PSNR, 100.0], rtol=1e-5)
  assert values['ssim'][0] < 0.9
  np.testing.assert_allclose(values['ssim'][1], 1.0, atol=1e-6)
  # SNR: the target's mean squared pixel over the MSE, in dB; a perfect one's MSE is floored.
  signal = np.mean(np.square(np.asarray(target, np.float64)), axis=(1, 2, 3))
  np.testing.assert_allclose(
      values['snr'], [10 * np.log10(signal[0] / HAND_MSE), 10 * np.log10(signal[1] / 1e-10)],
      rtol=1e-5)


@pytest.mark.parametrize('shape', [(2, 32, 32, 3), (3, 28, 28, 1), (2, 25, 31, 3), (1, 11, 11, 2)])
def test_ssim_blur_as_matrix_products_equals_dm_pix(shape):
  """metrics.ssim (dm_pix.ssim with the blur as two matrix products) and dm_pix.ssim as
  shipped: the same values on random image pairs, including odd and minimal sizes."""
  import dm_pix  # pylint: disable=g-import-not-at-top
  a = jax.random.uniform(jax.random.key(0), shape)
  b = jnp.clip(a + 0.2 * jax.random.normal(jax.random.key(1), shape), 0, 1)
  assert metrics.gaussian_blur(a).shape == (shape[0], shape[1] - 10, shape[2] - 10, shape[3])
  np.testing.assert_allclose(metrics.ssim(a, b), dm_pix.ssim(a, b), rtol=0, atol=1e-6)
  np.testing.assert_allclose(metrics.ssim(a, a), 1.0, atol=1e-6)


def test_ssim_and_psnr_match_skimage_on_cifar(cifar_images):
  target = cifar_images.astype(np.float32) / 255
  for kind, recon in _degraded(target).items():
    values = _image_metrics(jnp.asarray(recon), jnp.asarray(target))
    expected_ssim = [_skimage_ssim(r, t) for r, t in zip(recon, target)]
    expected_psnr = [skimage.metrics.peak_signal_noise_ratio(
        t.astype(np.float64), r.astype(np.float64), data_range=1.0)
                     for r, t in zip(recon, target)]
    np.testing.assert_allclose(values['ssim'], expected_ssim, atol=1e-3,
                               err_msg=kind)
    np.testing.assert_allclose(values['psnr'], expected_psnr, atol=1e-3,
                               err_msg=kind)
    # The degradations are real: SSIM well below 1 (here about 0.5 to 0.9).
    assert max(expected_ssim) < 0.95, kind


def test_ssim_matches_skimage_on_grayscale(gray_batches):
  for data, target in gray_batches.items():
    for kind, recon in _degraded(target, seed=1).items():
      ours = _image_metrics(jnp.asarray(recon), jnp.asarray(target))['ssim']
      expected = [_skimage_ssim(r, t) for r, t in zip(recon, target)]
      np.testing.assert_allclose(ours, expected, atol=1e-3,
                                 err_msg=f'{data} {kind}')
      assert min(expected) < 0.95, (data, kind)


def test_image_metrics_rejects_images_smaller_than_ssim_window():
  with pytest.raises(errors.DataError, match='11x11'):
    metrics.image_metrics(*_hand_batch())


def test_masked_sums_of_padded_batches_equal_unpadded_mean(cifar_images):
  target = cifar_images.astype(np.float32) / 255
  recon = _degraded(target)['noisy']
  expected = {k: np.mean(v[:5]) for k, v in _image_metrics(
      jnp.asarray(recon), jnp.asarray(target)).items()}

  # Evaluate in batches of 4: 5 real images padded to 8. The padding is
  # all-zero recon vs target (PSNR capped at 100) and NaN, which must not leak.
  recon[5:], target[5:] = 0.0, 0.0
  recon[-1] = np.nan
  mask = np.arange(8) < 5

  @jax.jit
  def eval_step(r, t, m):
    return metrics.masked_sums(metrics.image_metrics(r, t), m)

  batches = [eval_step(recon[i:i + 4], target[i:i + 4], mask[i:i + 4])
             for i in (0, 4)]
  totals = jax.tree.map(lambda a, b: a + b, *batches)
  assert float(totals['count']) == 5
  means = metrics.finalize(totals)
  assert set(means) == set(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(means[name], value, rtol=1e-5, err_msg=name)

  with pytest.raises(errors.DataError):
    metrics.finalize(eval_step(recon[:4], target[:4], np.zeros(4, bool)))


def test_mean_image_psnr_by_hand():
  # Mean training image 0.5 everywhere. An all-0 (or all-255) eval image has
  # MSE 0.25 -> 6.0206 dB; an all-127 one has MSE (0.5/255)^2 -> 54.152 dB.
  train = np.stack([np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8)])
  evals = np.stack([np.zeros((2, 2), np.uint8), np.full((2, 2), 127, np.uint8)])
  hand = (10 * math.log10(1 / 0.25) + 20 * math.log10(510)) / 2
  assert metrics.mean_image_psnr(train, evals) == pytest.approx(hand, abs=1e-9)
  # Predicting an eval image perfectly is capped at 100 dB, not inf.
  same = np.full((3, 2, 2), 7, np.uint8)
  assert metrics.mean_image_psnr(same, same) == pytest.approx(100.0)
  with pytest.raises(TypeError):
    metrics.mean_image_psnr(train.astype(np.float32), evals)


def test_mean_image_psnr_agrees_with_image_metrics(cifar_images):
  train, evals = cifar_images[:6], cifar_images
  baseline = metrics.mean_image_psnr(train, evals, chunk_size=3)
  mean_image = train.mean(axis=0) / 255
  values = _image_metrics(
      jnp.broadcast_to(jnp.asarray(mean_image, jnp.float32), evals.shape),
      jnp.asarray(evals, jnp.float32) / 255)
  assert baseline == pytest.approx(float(np.mean(values['psnr'])), abs=1e-3)
  assert 5.0 < baseline < 20.0  # Far below any trained autoencoder.


# Optimizers and schedules ---------------------------------------------------


def _optimizer_config(**overrides):
  """The documented default config with some keys overridden."""
  schedule = dict(name='constant', warmup_epochs=0.0, decay_rate=0.1,
                  decay_epochs=(), end_value_factor=0.0)
  schedule.update(overrides.pop('schedule', {}))
  config = dict(name='adam', learning_rate=1e-3, weight_decay=0.0,
                grad_clip_norm=0.0, momentum=0.9, nesterov=False, b1=0.9,
                b2=0.999, eps=1e-8, schedule=schedule)
  config.update(overrides)
  return ConfigDict(config)


def _one_update(tx, params, grads):
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)
  return optax.apply_updates(params, updates), state


@pytest.mark.parametrize('name', optim.optimizer_names())
def test_every_optimizer_lowers_a_quadratic(name):
  center = jnp.array([0.5, -1.0, 2.0])

  def quadratic(p):
    return jnp.sum(jnp.square(p - center))

  params = jnp.zeros(3)
  tx = optim.make_optimizer(_optimizer_config(name=name, learning_rate=0.1),
                            steps_per_epoch=10, num_epochs=1)
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(jax.grad(quadratic)(params), state, params)
    return optax.apply_updates(params, updates), state

  new_params, state = step(params, state)
  assert quadratic(new_params) < quadratic(params)
  assert float(state.hyperparams['learning_rate']) == pytest.approx(0.1)


def test_optimizer_names():
  assert {'adam', 'adamax', 'adamw', 'sgd', 'rmsprop', 'adagrad', 'adadelta',
          'nadam'} <= set(optim.optimizer_names())
  assert optim.schedule_names() == sorted(
      ['constant', 'warmup_cosine', 'warmup_exponential', 'step'])


# 10 steps per epoch, 10 epochs, peak rate 1.0, 2 warmup epochs (20 steps).
@pytest.mark.parametrize('schedule, expected', [
    (dict(name='constant', warmup_epochs=0.0), {0: 1.0, 50: 1.0, 99: 1.0}),
    (dict(name='constant'), {0: 0.0, 5: 0.25, 10: 0.5, 20: 1.0, 99: 1.0}),
    # Cosine over steps 20..100: halfway (step 60) is 0.1 + 0.9 * 0.5.
    (dict(name='warmup_cosine', end_value_factor=0.1),
     {0: 0.0, 10: 0.5, 20: 1.0, 40: 0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2,
      60: 0.55, 100: 0.1, 150: 0.1}),
    # decay_rate 0.5 every 2 epochs (20 steps) after warmup, continuously.
    (dict(name='warmup_exponential', decay_rate=0.5, decay_epochs=(2,)),
     {10: 0.5, 20: 1.0, 30: 0.5 ** 0.5, 40: 0.5, 80: 0.125}),
    # x0.1 at epochs 3 and 6, counted from the start of training.
    (dict(name='step', decay_rate=0.1, decay_epochs=(6, 3)),
     {10: 0.5, 20: 1.0, 29: 1.0, 30: 0.1, 59: 0.1, 60: 0.01, 99: 0.01}),
    # Fractional epochs: a 0.5-epoch warmup is 5 steps.
    (dict(name='step', warmup_epochs=0.5, decay_epochs=(0.5,)),
     {0: 0.0, 1: 0.2, 4: 0.8, 5: 0.1}),
])
def test_schedule_values(schedule, expected):
  schedule = {'warmup_epochs': 2.0, **schedule}
  fn = optim.make_schedule(
      _optimizer_config(learning_rate=1.0, schedule=schedule),
      steps_per_epoch=10, num_epochs=10)
  jitted = jax.jit(fn)
  for step, value in expected.items():
    assert float(fn(step)) == pytest.approx(value, rel=1e-5, abs=1e-7), step
    assert float(jitted(jnp.int32(step))) == pytest.approx(
        value, rel=1e-5, abs=1e-7), step


def test_injected_learning_rate_follows_schedule():
  config = _optimizer_config(
      name='sgd', learning_rate=1.0,
      schedule=dict(name='warmup_cosine', warmup_epochs=1.0))
  schedule = optim.make_schedule(config, steps_per_epoch=4, num_epochs=3)
  tx = optim.make_optimizer(config, steps_per_epoch=4, num_epochs=3)
  params = jnp.ones(2)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for k in range(1, 8):
    _, state = update(jnp.ones(2), state, params)
    # After k updates it holds the rate update k used: schedule(k - 1).
    assert float(state.hyperparams['learning_rate']) == pytest.approx(
        float(schedule(k - 1))), k


def test_coupled_and_decoupled_weight_decay():
  params = jnp.array([2.0, -4.0])
  zero_grad = jnp.zeros(2)

  def after_one_step(name, **kw):
    config = _optimizer_config(name=name, learning_rate=0.1, weight_decay=0.5,
                               **kw)
    tx = optim.make_optimizer(config, steps_per_epoch=1, num_epochs=1)
    return _one_update(tx, params, zero_grad)[0]

  # Plain SGD, coupled: gradient 0.5 * p, so p - 0.1 * 0.5 * p = 0.95 p.
  np.testing.assert_allclose(after_one_step('sgd', momentum=0.0),
                             0.95 * params, rtol=1e-6)
  # AdamW and Lion, decoupled: p - lr * wd * p = 0.95 p, regardless of Adam's
  # normalisation.
  np.testing.assert_allclose(after_one_step('adamw'), 0.95 * params, rtol=1e-6)
  np.testing.assert_allclose(after_one_step('lion'), 0.95 * params, rtol=1e-6)
  # Adam, coupled: the decay gradient is normalised like any gradient, so the
  # first step is lr * sign(p) whatever its size.
  np.testing.assert_allclose(after_one_step('adam'),
                             params - 0.1 * jnp.sign(params), rtol=1e-5)


def test_gradient_clipping_by_global_norm():
  params = jnp.zeros(2)
  grads = jnp.array([6.0, 8.0])  # Global norm 10.

  def update(**kw):
    config = _optimizer_config(name='sgd', learning_rate=1.0, momentum=0.0,
                               **kw)
    tx = optim.make_optimizer(config, steps_per_epoch=1, num_epochs=1)
    return _one_update(tx, params, grads)[0]

  np.testing.assert_allclose(update(grad_clip_norm=1.0), [-0.6, -0.8],
                             rtol=1e-6)
  np.testing.assert_allclose(update(grad_clip_norm=0.0), [-6.0, -8.0])
  np.testing.assert_allclose(update(grad_clip_norm=100.0), [-6.0, -8.0])
  # Clipping sees the loss gradient only; the coupled decay comes after it.
  params = jnp.array([1.0, 1.0])
  config = _optimizer_config(name='sgd', learning_rate=1.0, momentum=0.0,
                             grad_clip_norm=1.0, weight_decay=0.5)
  tx = optim.make_optimizer(config, steps_per_epoch=1, num_epochs=1)
  np.testing.assert_allclose(_one_update(tx, params, grads)[0],
                             params - (jnp.array([0.6, 0.8]) + 0.5 * params),
                             rtol=1e-6)


def test_sgd_nesterov_momentum():
  params, grads = jnp.zeros(1), jnp.ones(1)
  config = _optimizer_config(name='sgd', learning_rate=0.1, momentum=0.9,
                             nesterov=True)
  tx = optim.make_optimizer(config, steps_per_epoch=1, num_epochs=1)
  # Nesterov's first step looks ahead: (1 + momentum) * g.
  np.testing.assert_allclose(_one_update(tx, params, grads)[0], [-0.19],
                             rtol=1e-6)


def test_unknown_names_list_valid_ones():
  with pytest.raises(errors.ConfigError) as info:
    optim.make_optimizer(_optimizer_config(name='adamm'), 10, 1)
  assert isinstance(info.value, ValueError)
  for name in optim.optimizer_names():
    assert name in str(info.value)
  with pytest.raises(errors.ConfigError) as info:
    optim.make_schedule(_optimizer_config(schedule=dict(name='cosine')), 10, 1)
  for name in optim.schedule_names():
    assert name in str(info.value)


@pytest.mark.parametrize('overrides, match', [
    (dict(learning_rate=0.0), 'learning_rate'),
    (dict(learning_rate=-1e-3), 'learning_rate'),
    (dict(learning_rate='fast'), 'learning_rate'),
    (dict(weight_decay=-1e-4), 'weight_decay'),
    (dict(momentum=1.0), 'momentum'),
    (dict(schedule=dict(name='warmup_cosine', warmup_epochs=10.0)), 'warmup'),
    (dict(schedule=dict(name='constant', warmup_epochs=12.0)), 'warmup'),
    (dict(schedule=dict(name='warmup_exponential')), 'decay_epochs'),
    (dict(schedule=dict(name='step', decay_epochs=(3,), decay_rate=0.0)),
     'decay_rate'),
])
def test_bad_values_raise_config_error(overrides, match):
  with pytest.raises(errors.ConfigError, match=match):
    optim.make_optimizer(_optimizer_config(**overrides), steps_per_epoch=10,
                         num_epochs=10)
