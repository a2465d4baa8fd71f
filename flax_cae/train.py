"""The one training loop: every model, loss and data set goes through `train_and_evaluate`.

Data parallel with `jax.jit` over a 1-D `Mesh` (parameters replicated, batches
sharded along the batch axis, the train state donated). `config.steps_per_call`
steps run per device call (a `lax.scan` when > 1). The data order and every random
stream are functions of (seed, step), so a run resumed from a checkpoint continues
exactly as if it had never stopped.
"""

import contextlib
import functools
import json
import os
import signal
import threading
import time
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from flax_cae import errors, host_memory, optim, writers
from flax_cae import losses as losses_lib
from flax_cae import metrics as metrics_lib
from flax_cae import models as models_lib
from flax_cae.checkpoint import BEST_METRIC, Checkpoints
from flax_cae.data import pipeline, sources
from flax_cae.errors import ConfigError

# Steps per device call when config.steps_per_call is 0 ("auto"). On XLA's CPU backend
# a scanned step loses the fast convolution path (PERF_NOTES.md: ~10x slower), so CPU
# runs one step per call; on GPU/TPU many steps per call remove per-step dispatch.
DEFAULT_STEPS_PER_CALL = {'cpu': 1, 'gpu': 16, 'tpu': 16}

# config.cpu_convolutions: the XLA options of every compiled step on the CPU backend. XLA
# hands convolutions to YNNPACK by default (jax 0.10); for these models Eigen's convolutions
# measured about 2x faster on the project's CPU (benchmarks/RESULTS.md), so 'eigen' keeps
# only dots and reductions on YNNPACK. 'xla' leaves XLA's own choice.
CPU_CONVOLUTIONS = {
    'eigen': {'xla_cpu_experimental_ynn_fusion_type':
              'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'},
    'xla': None,
}


@functools.lru_cache
def _compiles_with(options: tuple) -> bool:
  try:
    jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(1.0).compile()
    return True
  except jax.errors.JaxRuntimeError as e:  # an XLA that no longer knows the option
    logging.warning('XLA rejected the CPU options %s (%s); using its defaults.', options, e)
    return False


def _cpu_convolution_options(config) -> dict | None:
  name = config.get('cpu_convolutions', 'eigen')
  if name not in CPU_CONVOLUTIONS:
    raise errors.unknown_name('cpu_convolutions', name, CPU_CONVOLUTIONS)
  return CPU_CONVOLUTIONS[name]


def compiler_options(config) -> dict | None:
  """XLA options for the compiled steps of this backend (see CPU_CONVOLUTIONS)."""
  options = _cpu_convolution_options(config)
  if jax.default_backend() != 'cpu' or not options:
    return None
  return options if _compiles_with(tuple(options.items())) else None


# Early-stopping metrics where smaller is better; the others (psnr, ssim) are maximised.
MINIMIZED = ('loss', 'mse', 'l1')


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def to_float(images_u8):
  """uint8 [B, H, W, C] -> float32 in [0, 1], inside the compiled step."""
  return images_u8.astype(jnp.float32) / 255.0


class Trainer:
  """The compiled functions of one run: init, train chunk, eval batch, reconstruct."""

  def __init__(self, config, model: nn.Module, mesh, steps_per_epoch: int):
    self.config = config
    self.model = model
    self.mesh = mesh
    self.loss_fn = losses_lib.get_loss(config.loss)
    self.tx = optim.make_optimizer(config.optimizer, steps_per_epoch, config.num_epochs)
    self.schedule = optim.make_schedule(config.optimizer, steps_per_epoch, config.num_epochs)
    self.rep = pipeline.replicated(mesh)
    self.data_sharding = pipeline.batch_sharding(mesh)
    # Streamed chunks arrive as [k, B, H, W, C]: shard the batch axis, not the step axis.
    self.stacked_sharding = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(None, pipeline.DATA_AXIS))
    self._chunks = {}
    self.compiler_options = compiler_options(config)

  # --- state ---------------------------------------------------------------------

  def init_state(self) -> TrainState:
    shape = self.model.opts.image_shape

    def init(key):
      variables = self.model.init({'params': key, 'dropout': key}, jnp.zeros((1, *shape)))
      params = variables['params']
      return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                        batch_stats=variables.get('batch_stats', {}),
                        opt_state=self.tx.init(params))

    # The key is made inside the compiled function: nothing crosses processes.
    return jax.jit(lambda: init(jax.random.fold_in(jax.random.key(self.config.seed),
                                                   -1 % 2**31)), out_shardings=self.rep)()

  # --- training ------------------------------------------------------------------

  def _train_step(self, state: TrainState, images_u8):
    x = to_float(images_u8)
    # Dropout noise is a function of (seed, step): exact after a resume.
    rng = jax.random.fold_in(jax.random.key(self.config.seed), state.step)

    def loss_fn(params):
      out, updates = self.model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, x, train=True,
          rngs={'dropout': rng}, mutable=['batch_stats'])
      loss = jnp.mean(self.loss_fn(out['reconstruction'], x))
      return loss, updates.get('batch_stats', {})

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(jnp.add, state.params, updates)
    return TrainState(state.step + 1, params, batch_stats, opt_state), loss

  def train_chunk(self, k: int, on_device: bool):
    """A compiled call running k steps. On device it gathers batch j of the epoch as
    images[perm[(offset + j) * B : ...]]; streamed, it takes [k, B, H, W, C] batches."""
    if (k, on_device) in self._chunks:
      return self._chunks[(k, on_device)]
    b = self.config.batch_size

    def run(state, get_batch):
      if k == 1:
        return self._train_step(state, get_batch(0))

      def body(state, j):
        return self._train_step(state, get_batch(j))
      state, losses = jax.lax.scan(body, state, jnp.arange(k))
      return state, losses.mean()

    if on_device:
      def chunk(state, images, perm, offset):
        return run(state, lambda j: pipeline.device_batch(
            images, perm, offset + j, b, self.data_sharding))
      fn = jax.jit(chunk, in_shardings=(self.rep, self.data_sharding, self.rep, None),
                   out_shardings=(self.rep, self.rep), donate_argnums=0,
                   compiler_options=self.compiler_options)
    else:
      def chunk(state, batches):
        return run(state, lambda j: batches[j])
      fn = jax.jit(chunk, in_shardings=(self.rep, self.stacked_sharding),
                   out_shardings=(self.rep, self.rep), donate_argnums=0,
                   compiler_options=self.compiler_options)
    self._chunks[(k, on_device)] = fn
    return fn

  # --- evaluation ----------------------------------------------------------------

  def _reconstruct(self, state, x):
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    return self.model.apply(variables, x, train=False)['reconstruction']

  def _eval_sums(self, state, images_u8, mask):
    x = to_float(images_u8)
    recon = self._reconstruct(state, x)
    per_image = metrics_lib.image_metrics(recon, x)
    per_image['loss'] = self.loss_fn(recon, x)
    return metrics_lib.masked_sums(per_image, mask)

  @property
  def eval_batch(self):
    """Masked metric sums of one batch: padded rows (mask False) count for nothing."""
    if not hasattr(self, '_eval_batch'):
      self._eval_batch = jax.jit(
          self._eval_sums, in_shardings=(self.rep, self.data_sharding, self.data_sharding),
          out_shardings=self.rep, compiler_options=self.compiler_options)
    return self._eval_batch

  @property
  def eval_slice(self):
    """Same as eval_batch on rows [start, start + B) of a split kept on the devices."""
    if not hasattr(self, '_eval_slice'):
      b = self.config.eval_batch_size

      def fn(state, images, start, n):
        batch = jax.lax.dynamic_slice_in_dim(images, start, b)
        batch = jax.lax.with_sharding_constraint(batch, self.data_sharding)
        mask = start + jnp.arange(b) < n
        return self._eval_sums(state, batch, mask)
      self._eval_slice = jax.jit(fn, in_shardings=(self.rep, self.data_sharding, None, None),
                                 out_shardings=self.rep, compiler_options=self.compiler_options)
    return self._eval_slice

  def evaluate(self, state, split: pipeline.Split) -> dict:
    """Mean metrics over the whole split: MSE, L1, PSNR (dB), SSIM, loss, and the count."""
    b = self.config.eval_batch_size
    total = None
    for start in range(0, split.n, b):
      if split.on_device:
        sums = self.eval_slice(state, split.images, start, split.n)
      else:  # rows past n are zero padding, masked out; each process reads its own rows
        idx = np.arange(start, start + b)
        mask = idx[pipeline.process_rows(self.data_sharding, b)] < split.n
        sums = self.eval_batch(state, split.global_batch(idx, self.data_sharding),
                               pipeline.to_global(mask, self.data_sharding, (b,)))
      total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    total = jax.device_get(total)
    means = {k: float(v) for k, v in metrics_lib.finalize(total).items()}
    return {**means, 'count': int(total['count'])}  # images counted: the split's size

  def reconstruct(self, state, images_u8: np.ndarray) -> np.ndarray:
    """Reconstructions of a few host images (the same on every process)."""
    if not hasattr(self, '_recon_fn'):
      self._recon_fn = jax.jit(lambda s, x: self._reconstruct(s, to_float(x)),
                               in_shardings=(self.rep, self.rep), out_shardings=self.rep,
                               compiler_options=self.compiler_options)
    x = pipeline.to_global(images_u8, self.rep, images_u8.shape)
    return pipeline.host_copy(self._recon_fn(state, x))

  def sample_images(self, split: pipeline.Split, n: int) -> np.ndarray:
    """The first n images of a split, as numpy on every process."""
    n = min(n, split.n)
    if split.on_device:
      return pipeline.host_copy(jax.jit(lambda x: x[:n], out_shardings=self.rep)(split.images))
    return split.host_batch(np.arange(n))


# --- the loop ------------------------------------------------------------------------


def validate(config, n_devices: int):
  for key in ('batch_size', 'num_epochs', 'eval_batch_size'):
    value = config.get(key)
    if not isinstance(value, int) or value <= 0:
      raise ConfigError(f'{key} must be a positive integer, got {value!r}; '
                        f'set --config.{key}=N with N > 0.')
  for key in ('batch_size', 'eval_batch_size'):
    if config[key] % n_devices:
      raise ConfigError(
          f'{key}={config[key]} is not divisible by the {n_devices} devices in use; '
          f'choose a multiple of {n_devices} (e.g. --config.{key}={n_devices * max(1, config[key] // n_devices)}).')
  if config.steps_per_call < 0:
    raise ConfigError('steps_per_call must be >= 0 (0 picks the backend default).')
  _cpu_convolution_options(config)
  host_memory.check_name(config.get('cpu_malloc', 'keep'))
  # Names and values that need no data: checked before anything is read or written.
  losses_lib.get_loss(config.loss)
  optim.make_optimizer(config.optimizer, 1, config.num_epochs)
  if config.model.name not in models_lib.MODELS:
    raise errors.unknown_name('model', config.model.name, models_lib.MODELS)
  metric = config.early_stopping.metric
  if metric not in MINIMIZED + ('psnr', 'ssim'):
    raise errors.unknown_name('early-stopping metric', metric, MINIMIZED + ('psnr', 'ssim'))
  if config.data.name not in sources.dataset_names():
    raise errors.unknown_name('data set', config.data.name, sources.dataset_names())


def load_data(config, mesh):
  n_dev = mesh.devices.size
  if jax.process_count() > 1:  # one process prepares a missing data set, the others wait
    if jax.process_index() == 0:
      sources.prepare(config.data.name, **pipeline.prepare_kwargs(config.data))
    multihost_utils.sync_global_devices('flax_cae_data_prepared')
  splits = {
      'train': pipeline.load_split(config.data, 'train', mesh, n_dev),
      'validation': pipeline.load_split(config.data, 'validation', mesh, config.eval_batch_size),
      'test': pipeline.load_split(config.data, 'test', mesh, config.eval_batch_size),
  }
  if splits['train'].n < config.batch_size:
    raise ConfigError(
        f"batch_size={config.batch_size} is larger than the {splits['train'].n} training images "
        f'of {config.data.name}; lower --config.batch_size.')
  return splits


def _fmt_time(seconds: float) -> str:
  seconds = int(max(0, seconds))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def random_streams():
  """The context every compiled step runs in. Partitionable threefry (JAX's default) lets
  each device draw only its shard of the dropout masks, but XLA's CPU compiler takes ~10 s
  more per run on it; on CPU we use the classic stream. Either way the numbers do not
  depend on the device count."""
  if jax.default_backend() != 'cpu':
    return contextlib.nullcontext()  # JAX's default, whatever its flag is called
  return jax.threefry_partitionable(False)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config.model` on `config.data` in `workdir` (resuming if it holds checkpoints)
  and returns the results dict also written to results.json; stopped by SIGTERM, it saves
  and returns {'preempted': True, 'step': ..., 'total_steps': ...} instead."""
  with random_streams(), StopOnSigterm() as stop:
    return _train_and_evaluate(config, workdir, stop)


class StopOnSigterm:
  """SIGTERM (how pods and SLURM preempt) asks the loop to save and stop, not to die.

  One process: a Python signal handler sets a flag the loop reads after each call.
  Many processes: JAX's preemption service (started by jax.distributed) catches the
  signal on any host and `reached_preemption_sync_point` turns True on all of them at
  the same call, so they save the same step together.
  """

  def __enter__(self):
    self.signalled = False
    self.previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self.previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.signalled = True
    logging.warning('SIGTERM received: saving a checkpoint after the current step.')

  def reached(self, call_index: int) -> bool:
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(call_index)
    return self.signalled

  def __exit__(self, *exc):
    if self.previous is not None:
      signal.signal(signal.SIGTERM, self.previous)


def _train_and_evaluate(config, workdir: str, stop: StopOnSigterm) -> dict:
  mesh = pipeline.make_mesh()
  n_dev = mesh.devices.size
  if not config.get('eval_batch_size'):
    config.eval_batch_size = config.batch_size
  validate(config, n_dev)
  os.makedirs(workdir, exist_ok=True)

  splits = load_data(config, mesh)
  train = splits['train']
  model = models_lib.build_model(config.model, train.image_shape)
  bneck = models_lib.bottleneck(model)
  steps_per_epoch = train.n // config.batch_size
  total_steps = steps_per_epoch * config.num_epochs
  trainer = Trainer(config, model, mesh, steps_per_epoch)
  state = trainer.init_state()
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  steps_per_call = config.steps_per_call or DEFAULT_STEPS_PER_CALL.get(jax.default_backend(), 1)

  logging.info('%s on %s %s: %d train / %d validation / %d test images, %d devices (%s), '
               '%s parameters, %d steps per call%s',
               config.model.name, config.data.name, train.image_shape, train.n,
               splits['validation'].n, splits['test'].n, n_dev, jax.default_backend(),
               f'{n_params:,}', steps_per_call,
               '' if train.on_device else ', training data streamed from the host')
  logging.info('%s', models_lib.describe_bottleneck(bneck))
  if bneck['compression_ratio'] <= 1:
    logging.warning('The code (%d floats) is at least as large as the input (%d): this model '
                    'compresses nothing (fine for denoising, not for compression studies).',
                    bneck['floats'], bneck['input_floats'])

  ckpts = Checkpoints(os.path.join(os.path.abspath(workdir), 'checkpoints'),
                      keep=config.keep_checkpoints)
  meta = {'epoch': 0, 'best_step': None, 'best_psnr': None, 'best_es': None,
          'bad_evals': 0, 'stopped_early': False, 'train_seconds': 0.0, 'images_per_second': None}
  # What fixes the parameters' shapes and meaning; a workdir may only resume the same.
  options = models_lib.model_options(model)
  model_record = json.loads(json.dumps({'name': config.model.name, **{
      k: options[k] for k in ('image_shape', 'latent_dim', 'widths', 'hidden_dim',
                              'batch_norm', 'skips')}}))
  meta['model'] = model_record

  def check_model(saved_meta):
    saved = saved_meta.get('model')
    if saved is not None and saved != model_record:
      diff = {k: (saved.get(k), v) for k, v in model_record.items() if saved.get(k) != v}
      raise ConfigError(
          f'{workdir!r} holds checkpoints of a different model (saved vs now: {diff}); '
          'use a new --workdir, or the config that wrote those checkpoints.')
  restored = ckpts.restore_latest(state, check_model)
  if restored is not None:
    step, state, meta = restored
    logging.info('Resumed from the checkpoint at step %d (epoch %d) in %s.', step,
                 step // steps_per_epoch, workdir)

  if writers.is_writer():
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  writer = writers.MetricWriter(workdir)
  es_metric = config.early_stopping.metric
  es_sign = -1.0 if es_metric in MINIMIZED else 1.0

  def evaluate_and_save(step, epoch):
    """Validation metrics, a picture, early-stopping bookkeeping; a checkpoint when one is
    due, when this is the best model so far (so it is kept), or when training stops."""
    val = trainer.evaluate(state, splits['validation'])
    writer.write(step, 'validation', val)
    logging.info('epoch %d step %d validation: %s', epoch, step,
                 ', '.join(f'{k} {v:.4f}' for k, v in val.items() if k != 'count'))
    sample = trainer.sample_images(splits['validation'], config.num_sample_images)
    grid = writers.reconstruction_grid(sample / 255.0, trainer.reconstruct(state, sample))
    if writers.is_writer():
      writers.save_png(os.path.join(workdir, 'reconstructions', f'step_{step:08d}.png'), grid)
      writer.image(step, 'validation/reconstructions', grid)
    score = es_sign * val[es_metric]
    if meta['best_es'] is None or score > meta['best_es'] + config.early_stopping.min_delta:
      meta.update(best_es=score, bad_evals=0)
    else:
      meta['bad_evals'] += 1
    patience = config.early_stopping.patience
    if patience and meta['bad_evals'] >= patience:
      meta['stopped_early'] = True
      logging.info('Early stopping at epoch %d: validation %s did not improve for %d evals.',
                   epoch, es_metric, patience)
    is_best = meta['best_psnr'] is None or val[BEST_METRIC] > meta['best_psnr']
    if is_best:
      meta.update(best_psnr=val[BEST_METRIC], best_step=step)
    meta['epoch'] = epoch
    if (is_best or epoch % config.checkpoint_every_epochs == 0 or step == total_steps
        or meta['stopped_early']):
      ckpts.save(step, state, meta, metrics={BEST_METRIC: val[BEST_METRIC]})

  step = int(state.step)
  perm = prefetch = None
  b = config.batch_size
  # Throughput is timed from the end of the first call (compilation) to the last step.
  timed_images, timed_seconds, first_call = 0, 0.0, True
  seg_start = last_log = time.time()
  log_losses, log_start = [], step

  def check_finite(losses):
    """Stops on a NaN/Inf loss, naming the step; the last good checkpoint stays on disk."""
    if not losses:
      return float('nan')
    values = jax.device_get([loss for _, loss in losses])
    for (at, _), value in zip(losses, values):
      if not np.isfinite(value).all():
        ckpts.wait()  # an asynchronous save still in flight is finished, not left half-written
        good = ckpts.latest_step()
        raise errors.DivergedError(
            f'The training loss became {float(np.mean(value))} at step {at}; the last good '
            f'checkpoint ({"none yet" if good is None else f"step {good}"}) is kept in '
            f'{workdir!r}; lower --config.optimizer.learning_rate or set '
            '--config.optimizer.grad_clip_norm and run again.')
    return float(np.mean([np.mean(v) for v in values]))

  calls = 0
  while step < total_steps and not meta['stopped_early']:
    epoch, offset = divmod(step, steps_per_epoch)
    if offset == 0 or perm is None:
      perm = pipeline.epoch_permutation(config.seed, epoch, train.n, mesh)
      if not train.on_device:
        # Read the rest of this epoch's chunks on a background thread, in order.
        # Each process reads only its devices' rows of each [k, B] chunk.
        host_perm = pipeline.host_copy(perm)
        chunks = [(o, min(steps_per_call, steps_per_epoch - o))
                  for o in range(offset, steps_per_epoch, steps_per_call)]
        prefetch = pipeline.Prefetcher(
            lambda c, p=host_perm: train.global_batch(
                p[c[0] * b:(c[0] + c[1]) * b].reshape(c[1], b), trainer.stacked_sharding, axis=1),
            chunks)
    k = min(steps_per_call, steps_per_epoch - offset)
    if train.on_device:
      state, loss = trainer.train_chunk(k, True)(state, train.images, perm, offset)
    else:
      state, loss = trainer.train_chunk(k, False)(state, prefetch.get())
    step += k
    log_losses.append((step, loss))
    if first_call:
      jax.block_until_ready(state)
      meta['train_seconds'] += time.time() - seg_start
      seg_start, first_call = time.time(), False
    else:
      timed_images += k * config.batch_size
    epoch_done = step % steps_per_epoch == 0
    if time.time() - last_log >= config.log_every_seconds or step == total_steps:
      mean_loss = check_finite(log_losses)  # the only host sync per log
      now = time.time()
      rate = (step - log_start) * config.batch_size / max(now - last_log, 1e-9)
      lr = float(trainer.schedule(step))
      logging.info('epoch %d/%d step %d/%d loss %.5f lr %.2e %.0f img/s, %s left',
                   epoch + 1, config.num_epochs, step, total_steps, mean_loss, lr, rate,
                   _fmt_time((total_steps - step) * config.batch_size / max(rate, 1e-9)))
      writer.write(step, 'train', {'loss': mean_loss, 'learning_rate': lr,
                                   'images_per_second': rate})
      last_log, log_losses, log_start = now, [], step
    if epoch_done:
      epoch += 1
      if (epoch % config.eval_every_epochs == 0 or epoch % config.checkpoint_every_epochs == 0
          or step == total_steps):
        check_finite(log_losses)  # never evaluate or save a diverged model
        seconds = time.time() - seg_start
        meta['train_seconds'] += seconds
        timed_seconds += seconds
        evaluate_and_save(step, epoch)
        seg_start = last_log = time.time()
        log_losses, log_start = [], step
    calls += 1
    if stop.reached(calls) and step < total_steps and not meta['stopped_early']:
      check_finite(log_losses)
      if step not in ckpts.all_steps():  # not just saved at an epoch's end
        meta['epoch'] = step // steps_per_epoch
        meta['train_seconds'] += time.time() - seg_start
        ckpts.save(step, state, meta)
      ckpts.close()
      writer.close()
      logging.warning('Stopped by SIGTERM at step %d of %d; its checkpoint is in %s. Run the '
                      'same command to resume.', step, total_steps, ckpts.directory)
      return {'preempted': True, 'step': step, 'total_steps': total_steps}
  if timed_images:
    meta['images_per_second'] = timed_images / max(timed_seconds, 1e-9)
  ckpts.wait()

  # Final numbers come from the best checkpoint by validation PSNR.
  best_step = meta['best_step']
  if best_step is not None and best_step != int(state.step):
    state, _ = ckpts.restore(best_step, state)
  test = trainer.evaluate(state, splits['test'])
  val = trainer.evaluate(state, splits['validation'])
  writer.write(int(state.step), 'test', test)
  results = {
      'model': config.model.name, 'data': config.data.name, 'loss': config.loss.name,
      'optimizer': config.optimizer.name, 'image_shape': list(train.image_shape),
      'eval_split': 'test', 'best_step': best_step, 'total_steps': total_steps,
      'stopped_early': meta['stopped_early'],
      **{f'test_{k}': v for k, v in test.items() if k != 'count'},
      **{f'validation_{k}': v for k, v in val.items() if k != 'count'},
      'bottleneck_floats': bneck['floats'], 'bottleneck_parts': bneck['parts'],
      'input_floats': bneck['input_floats'], 'compression_ratio': bneck['compression_ratio'],
      'bottleneck_text': models_lib.describe_bottleneck(bneck),
      'parameters': n_params, 'train_seconds': meta['train_seconds'],
      'images_per_second': meta['images_per_second'], 'devices': n_dev,
      'backend': jax.default_backend(), 'model_options': models_lib.model_options(model),
  }
  writers.write_results(workdir, results)
  writer.close()
  ckpts.close()
  logging.info('Test: PSNR %.2f dB, SSIM %.4f, MSE %.5f (best checkpoint, step %s).',
               test['psnr'], test['ssim'], test['mse'], best_step)
  return results

