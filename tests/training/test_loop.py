"""The training loop on the real default config, shrunk: best-keeping, early stopping, steps
per call, streaming vs device-resident data. (Exact resume after kills: test_preemption.py;
many devices and hosts: test_multihost.py.)"""

import json
import os

import jax
import numpy as np
import pytest

from runs import assert_trees_close, final_params, read_metrics, tiny_config
from flax_cae import models
from flax_cae.training import loop as train
from flax_cae.training import trainer as trainer_lib
from flax_cae.training import augment as augment_lib
from flax_cae.runtime import xla
from flax_cae.runtime.checkpoint import Checkpoints, Reader
from flax_cae.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def test_outputs_in_workdir(tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(tiny_config(data_dir), workdir)
  files = set(os.listdir(workdir))
  assert {'config.json', 'metrics.jsonl', 'results.json', 'results.md', 'tensorboard',
          'reconstructions', 'checkpoints'} <= files
  assert json.load(open(os.path.join(workdir, 'config.json')))['model']['latent_dim'] == 16
  assert len(read_metrics(workdir, 'train')) == 8          # 2 epochs x 4 steps
  assert [r['step'] for r in read_metrics(workdir, 'validation')] == [4, 8]
  assert sorted(os.listdir(os.path.join(workdir, 'reconstructions'))) == [
      'step_00000004.png', 'step_00000008.png']
  assert any(f.startswith('events.out.tfevents') for f in
             os.listdir(os.path.join(workdir, 'tensorboard')))
  for key in ('test_psnr', 'test_ssim', 'test_mse', 'bottleneck_floats', 'compression_ratio',
              'parameters', 'train_seconds', 'images_per_second'):
    assert results[key] is not None, key
  assert results['bottleneck_floats'] == 16
  assert results['compression_ratio'] == pytest.approx(625 / 16)
  assert json.load(open(os.path.join(workdir, 'results.json')))['test_psnr'] == results['test_psnr']
  table = open(os.path.join(workdir, 'results.md')).read()
  assert f"{results['test_psnr']:.2f}" in table and 'improved_cae' in table


def test_checkpoints_keep_latest_and_best(tmp_path):
  ckpts = Checkpoints(str(tmp_path / 'ckpt'), keep=2)
  state = {'w': np.arange(3, dtype=np.float32)}
  for step, psnr in zip([1, 2, 3, 4, 5], [10.0, 30.0, 12.0, 13.0, 14.0]):
    ckpts.save(step, {'w': state['w'] + step}, {'epoch': step}, metrics={'psnr': psnr})
  ckpts.wait()
  assert ckpts.all_steps() == [2, 4, 5]   # best (30 dB at step 2) + latest two
  ckpts.close()
  reader = Reader(str(tmp_path / 'ckpt'))
  restored, meta = reader.restore_raw(2)
  np.testing.assert_array_equal(restored['w'], state['w'] + 2)
  assert meta == {'epoch': 2}
  reader.close()


def test_a_checkpoint_keeps_the_meta_of_its_step_while_the_run_goes_on(tmp_path, monkeypatch):
  # The save is asynchronous: the run's later changes to its meta (here, the training rate
  # set after the last save) must not reach the checkpoint written in the background.
  from flax_cae.runtime import checkpoint  # pylint: disable=import-outside-toplevel
  written = []
  json_save = checkpoint.ocp.args.JsonSave
  monkeypatch.setattr(checkpoint.ocp.args, 'JsonSave',
                      lambda item: written.append(item) or json_save(item))
  ckpts = Checkpoints(str(tmp_path / 'ckpt'), keep=2)
  meta = {'epoch': 3, 'images_per_second': None, 'best_step': [12]}
  ckpts.save(12, {'w': np.ones(3, np.float32)}, meta, metrics={'score': 1.0})
  meta['images_per_second'], meta['best_step'][0] = 2000.0, 16  # the run goes on
  ckpts.wait()
  assert written == [{'epoch': 3, 'images_per_second': None, 'best_step': [12]}]
  assert ckpts.restore_meta(12) == {'epoch': 3, 'images_per_second': None, 'best_step': [12]}
  ckpts.close()


def test_a_reader_lists_again_when_a_step_vanishes_mid_listing(tmp_path, monkeypatch):
  # Orbax checks a step's folder with exists() then is_dir(): a step the writer deletes in
  # between raises NotADirectoryError (or FileNotFoundError) from the listing itself.
  ckpts = Checkpoints(str(tmp_path / 'ckpt'), keep=2)
  ckpts.save(1, {'w': np.ones(3, np.float32)}, {'epoch': 1}, metrics={'psnr': 1.0})
  ckpts.close()
  reader = Reader(str(tmp_path / 'ckpt'))
  reload, failures = reader.manager.reload, [NotADirectoryError('gone'), FileNotFoundError('gone')]

  def vanishing_reload():
    if failures:
      raise failures.pop()
    return reload()
  monkeypatch.setattr(reader.manager, 'reload', vanishing_reload)
  assert reader.steps() == [1]
  assert not failures
  reader.close()


def test_final_results_use_the_best_checkpoint(tmp_path, data_dir):
  # A learning rate this large wrecks the model after the first epoch, so the best
  # validation PSNR is early and must be the one reported, and kept on disk.
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(
      tiny_config(data_dir, num_epochs=4, keep_checkpoints=1, **{
          'optimizer.learning_rate': 1e-3,
          'optimizer.schedule.name': 'step', 'optimizer.schedule.decay_rate': 3000.0,
          'optimizer.schedule.decay_epochs': (1,)}), workdir)
  val = read_metrics(workdir, 'validation')
  best = max(val, key=lambda r: r['psnr'])
  assert results['best_step'] == best['step'] and best['step'] != 16
  assert results['validation_psnr'] == pytest.approx(best['psnr'], abs=1e-4)
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit())
  assert steps == sorted({best['step'], 16})


def test_early_stopping(tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(
      tiny_config(data_dir, num_epochs=10, **{'early_stopping.patience': 2,
                                              'early_stopping.min_delta': 1e9}), workdir)
  assert results['stopped_early']
  assert [r['step'] for r in read_metrics(workdir, 'validation')] == [4, 8, 12]
  # Started again, a stopped run does not train on.
  again = train.train_and_evaluate(
      tiny_config(data_dir, num_epochs=10, **{'early_stopping.patience': 2,
                                              'early_stopping.min_delta': 1e9}), workdir)
  assert again['stopped_early'] and len(read_metrics(workdir, 'validation')) == 3
  # It reports the whole run's training rate (nothing was trained this time).
  assert again['images_per_second'] == pytest.approx(
      12 * tiny_config(data_dir).batch_size / again['train_seconds'])


def test_steps_per_call_and_streaming_match(tmp_path, data_dir):
  """One step per call (device data), 4 per call (lax.scan) and host streaming all train
  on the same batches: same parameters within float tolerance. (SGD, because Adam turns float noise in near-zero gradients into full-size
  steps.)"""
  runs = {}
  for name, overrides in {
      'device_1': {'steps_per_call': 1, 'optimizer.name': 'sgd'},
      'device_4': {'steps_per_call': 4, 'optimizer.name': 'sgd'},
      'stream_2': {'steps_per_call': 2, 'optimizer.name': 'sgd', 'data.device_memory_limit_mb': 0},
  }.items():
    workdir = str(tmp_path / name)
    train.train_and_evaluate(tiny_config(data_dir, **overrides), workdir)
    runs[name] = final_params(workdir)[0]
  assert_trees_close(runs['device_1'], runs['device_4'], rtol=1e-4, atol=1e-5)
  assert_trees_close(runs['device_1'], runs['stream_2'], rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # default-run time (CI's 15 minutes); `-m slow` runs it
def test_xla_cpu_convolutions_match_eigen(tmp_path, data_dir):
  """cpu_convolutions='xla' (XLA's default CPU convolutions) trains to the same parameters."""
  runs = []
  for name, convs in (('eigen', 'eigen'), ('xla', 'xla')):
    workdir = str(tmp_path / name)
    train.train_and_evaluate(tiny_config(data_dir, **{'optimizer.name': 'sgd',
                                                      'cpu_convolutions': convs}), workdir)
    runs.append(final_params(workdir)[0])
  assert_trees_close(runs[0], runs[1], rtol=1e-4, atol=1e-5)


def test_init_compiled_fast_is_bit_identical_to_xla_defaults(monkeypatch):
  """Trainer.init_state compiles at INIT_OPTIONS' lower LLVM level on the CPU (a run's start,
  not its steps); the parameters and optimizer state must be exactly those that XLA's
  default level gives, so a seed's run is the same run either way."""
  assert xla.init_compiler_options() == xla.INIT_OPTIONS  # in use on this backend
  config = tiny_config('unused')  # configs/default.py's ImprovedCAE at test size
  model = models.build_model(config.model, (16, 16, 3))
  trainer = trainer_lib.Trainer(config, model, pipeline.make_mesh(), steps_per_epoch=4)
  fast = trainer.init_state()
  monkeypatch.setattr(xla, 'init_compiler_options', lambda: None)
  slow = trainer.init_state()
  assert len(jax.tree.leaves(fast)) > 10
  for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(slow), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_epoch_order_depends_only_on_seed():
  mesh1 = pipeline.make_mesh(jax.devices()[:1])
  a = np.asarray(pipeline.epoch_permutation(0, 3, 100, mesh1))
  b = np.asarray(pipeline.epoch_permutation(0, 3, 100, mesh1))
  c = np.asarray(pipeline.epoch_permutation(0, 4, 100, mesh1))
  d = np.asarray(pipeline.epoch_permutation(1, 3, 100, mesh1))
  assert sorted(a) == list(range(100))
  assert (a == b).all() and not (a == c).all() and not (a == d).all()


def test_device_resident_split_and_batch_order(data_dir):
  """A split on the device is the uint8 source padded with zero rows, sharded along the
  batch axis; batch j of an epoch is images[perm[j*B:(j+1)*B]]."""
  from flax_cae.data import sources
  c = tiny_config(data_dir)
  mesh = pipeline.make_mesh()
  split = pipeline.load_split(c.data, 'train', mesh, pad_multiple=64)
  assert split.on_device and split.n == 160 and split.images.shape == (192, 25, 25, 1)
  assert split.images.dtype == np.uint8
  assert split.images.sharding.spec == jax.sharding.PartitionSpec('data')
  host = sources.load_arrays(sources.get_source('lfw_subset', 'train',
                                                **pipeline.source_kwargs(c.data)))['image']
  np.testing.assert_array_equal(np.asarray(split.images[:160]), host)
  assert not np.asarray(split.images[160:]).any()
  perm = pipeline.epoch_permutation(c.seed, 1, split.n, mesh)
  gather = jax.jit(lambda im, p, j: pipeline.device_batch(
      im, p, j, 40, pipeline.batch_sharding(mesh)))
  for j in range(4):
    expected = host[np.asarray(perm)[j * 40:(j + 1) * 40]]
    np.testing.assert_array_equal(np.asarray(gather(split.images, perm, j)), expected)
  # Streaming reads the same rows from the host source.
  streamed = pipeline.load_split(_with_limit(c.data, 0), 'train', mesh, pad_multiple=64)
  assert not streamed.on_device
  np.testing.assert_array_equal(streamed.host_batch(np.asarray(perm)[:40]), host[np.asarray(perm)[:40]])


def _with_limit(data_config, limit_mb):
  d = data_config.copy_and_resolve_references()
  d.device_memory_limit_mb = limit_mb
  return d


def test_ema_of_the_parameters_is_what_evaluation_runs(data_dir):
  """ema_decay (a lever of the best256 recipe): after each step ema = d * ema + (1 - d) * params with
  d = min(ema_decay, (1 + t) / (10 + t)); evaluation applies it; off, it is not kept."""
  config = tiny_config(data_dir, ema_decay=0.5)
  config.model.update(name='fc_ae', widths=(), hidden_dim=16, latent_dim=4)  # the rule, not the model
  model = models.build_model(config.model, (16, 16, 1))
  mesh = pipeline.make_mesh()
  trainer = trainer_lib.Trainer(config, model, mesh, steps_per_epoch=4)
  batch = (np.asarray(jax.random.randint(jax.random.key(0), (8, 16, 16, 1), 0, 256), np.uint8),
           np.zeros(8, np.int32))
  step = jax.jit(lambda s: trainer._train_step(s, batch, trainer._numbers())[0])
  s0 = trainer.init_state()
  s1 = step(s0)
  s2 = step(s1)
  close = lambda a, b: jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), a, b)
  close(s1.ema_params, jax.tree.map(lambda a, b: 0.1 * a + 0.9 * b, s0.params, s1.params))
  d = 2 / 11
  close(s2.ema_params, jax.tree.map(lambda a, b: d * a + (1 - d) * b, s1.ema_params, s2.params))
  assert not np.allclose(jax.tree.leaves(s2.ema_params)[0], jax.tree.leaves(s2.params)[0])
  close(trainer.eval_variables(s2)['params'], s2.ema_params)
  off = trainer_lib.Trainer(tiny_config(data_dir, **{'model.name': 'fc_ae'}), model, mesh,
                      steps_per_epoch=4)
  s = off.init_state()
  # Off, the state is TrainState itself, so checkpoints written before ema_decay still read.
  assert type(s) is trainer_lib.TrainState and off.eval_variables(s)['params'] is s.params


def test_flip_mirrors_about_half_the_training_images_the_same_way_after_a_resume(data_dir):
  """augment='flip': each training image is itself or its left-right mirror, about half of
  them mirrored, drawn from (seed, step) only; the training step sees the augmented batch."""
  images = np.asarray(jax.random.randint(jax.random.key(0), (256, 8, 8, 3), 0, 256), np.uint8)
  out = np.asarray(augment_lib.augment('flip', images, 0, 3))
  np.testing.assert_array_equal(out, augment_lib.augment('flip', images, 0, 3))  # same draw on a resume
  mirrored = np.array([np.array_equal(o, x[:, ::-1]) for o, x in zip(out, images)])
  kept = np.array([np.array_equal(o, x) for o, x in zip(out, images)])
  assert np.all(mirrored ^ kept)  # each image is one or the other, never anything else
  assert 90 < mirrored.sum() < 166, mirrored.sum()  # 256 draws with p=1/2: 128 +- 38 (4.7 sd)
  assert not np.array_equal(out, augment_lib.augment('flip', images, 0, 4))  # a fresh draw each step
  assert augment_lib.augment('none', images, 0, 3) is images

  def one_step(augment, batch_images):
    # SGD: Adam's first step is lr * g / (|g| + eps), so float noise in a near-zero gradient
    # (the flip is fused into another compiled step) moved a weight 1.5e-6 on an AVX2 EPYC.
    config = tiny_config(data_dir, augment=augment, **{'optimizer.name': 'sgd',
                                                       'optimizer.learning_rate': 0.1})
    config.model.update(name='fc_ae', widths=(), hidden_dim=16, latent_dim=4)
    trainer = trainer_lib.Trainer(config, models.build_model(config.model, (16, 16, 1)),
                            pipeline.make_mesh(), steps_per_epoch=4)
    batch = (batch_images, np.zeros(len(batch_images), np.int32))
    return trainer._train_step(trainer.init_state(), batch, trainer._numbers())[0].params

  half = np.asarray(jax.random.randint(jax.random.key(1), (8, 16, 8, 1), 0, 256), np.uint8)
  symmetric = np.concatenate([half, half[:, :, ::-1]], axis=2)  # its own mirror
  assert_trees_close(one_step('flip', symmetric), one_step('none', symmetric))
  asymmetric = np.concatenate([half, 255 - half], axis=2)
  flip, none = jax.tree.leaves(one_step('flip', asymmetric)), jax.tree.leaves(one_step('none', asymmetric))
  assert any(not np.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(flip, none))


def test_flip_crop_shifts_each_flipped_image_by_at_most_4_pixels_with_a_reflected_border():
  """augment='flip_crop': the image 'flip' gives, shifted by up to 4 pixels each way with the
  border reflected (np.pad's 'reflect'), one shift per image, the same on a resume."""
  images = np.asarray(jax.random.randint(jax.random.key(1), (64, 12, 12, 3), 0, 256), np.uint8)
  out = np.asarray(augment_lib.augment('flip_crop', images, 0, 7))
  np.testing.assert_array_equal(out, augment_lib.augment('flip_crop', images, 0, 7))
  assert not np.array_equal(out, augment_lib.augment('flip_crop', images, 0, 8))
  flipped = np.asarray(augment_lib.augment('flip', images, 0, 7))  # the same flips underneath
  p = augment_lib.CROP_PAD
  padded = np.pad(flipped, ((0, 0), (p, p), (p, p), (0, 0)), mode='reflect')
  shifts = []
  for o, x in zip(out, padded):
    found = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
             if np.array_equal(o, x[dy:dy + 12, dx:dx + 12])]
    assert len(found) == 1, 'an output is no crop of its reflected, padded image'
    shifts.append(found[0])
  assert len(set(shifts)) > 20  # 81 possible shifts, 64 draws: not one shift for all
  dy, dx = np.array(shifts).T - p
  assert dy.min() < 0 < dy.max() and dx.min() < 0 < dx.max()  # shifts both ways on both axes
