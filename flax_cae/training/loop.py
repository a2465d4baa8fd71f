"""The one training loop: every model, loss and data set goes through `train_and_evaluate`.

Data parallel with `jax.jit` over a 1-D `Mesh` (parameters replicated, batches
sharded along the batch axis, the train state donated). `config.steps_per_call`
steps run per device call (a `lax.scan` when > 1). The data order and every random
stream are functions of (seed, step), so a run resumed from a checkpoint continues
exactly as if it had never stopped.
"""

import copy
import dataclasses
import functools
import json
import os
import time
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from flax_cae.runtime import errors
from flax_cae.runtime import host_memory
from flax_cae.training import optim
from flax_cae.runtime import preemption
from flax_cae.runtime import streams
from flax_cae.training import tasks
from flax_cae.runtime import writers
from flax_cae.data import noise as noise_lib
from flax_cae.runtime import workdir as workdir_lib
from flax_cae.measures import metrics as metrics_lib
from flax_cae import models as models_lib
from flax_cae.runtime.checkpoint import SCORE, Checkpoints
from flax_cae.data import pipeline, sources
from flax_cae.runtime.errors import ConfigError

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


def _on_cpu(options: dict | None) -> dict | None:
  """options where the backend is the CPU and its XLA accepts them, else None (defaults)."""
  if jax.default_backend() != 'cpu' or not options:
    return None
  return options if _compiles_with(tuple(options.items())) else None


def compiler_options(config) -> dict | None:
  """XLA options for the compiled steps of this backend (see CPU_CONVOLUTIONS)."""
  return _on_cpu(_cpu_convolution_options(config))


# The XLA options of the CPU's initialisation programs. At XLA's default LLVM level (3) the
# random initialisers (threefry + erf_inv, one program per parameter) took most of a run's
# start: 7.9 s for configs/default.py's ImprovedCAE on a 2-core AVX2 EPYC, 2.2 s at level 1,
# with bit-identical parameters and optimizer state (tests/test_training.py checks this;
# benchmarks/init_compile.py measures it). Init runs once, so its code's speed is moot.
INIT_OPTIONS = {'xla_backend_optimization_level': 1}


def init_compiler_options() -> dict | None:
  """INIT_OPTIONS on the CPU backend (if its XLA accepts them), else XLA's defaults."""
  return _on_cpu(INIT_OPTIONS)


def init_variables(module: nn.Module, rngs, *args, **kwargs):
  """module.init(rngs, *args, **kwargs), compiled with init_compiler_options()."""
  return jax.jit(functools.partial(module.init, **kwargs),
                 compiler_options=init_compiler_options())(rngs, *args)


# Validation metrics where smaller is better; the others (psnr, snr, ssim, accuracy) are
# maximised.
MINIMIZED = ('loss', 'mse', 'l1', 'cross_entropy', 'noisy_mse', 'kl', 'bpp')


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


@flax.struct.dataclass
class EmaTrainState(TrainState):
  """With config.ema_decay > 0: also the parameters' moving average, which evaluation runs.
  A subclass, so a run without it keeps TrainState's structure (and its checkpoints read)."""
  ema_params: Any


# The numbers in which members trained together (jax.vmap over a member axis) may differ;
# everything else (model, loss name, optimizer name and schedule, data, batch size) is shared.
MEMBER_NUMBERS = ('seed', 'optimizer.learning_rate', 'loss.alpha', 'loss.beta', 'loss.ssim_weight',
                  'loss.rd_lambda')


class Trainer:
  """The compiled functions of one run: init, train chunk, eval batch, reconstruct.

  With `members` ({'seed': [M], 'learning_rate': [M], and the loss's weights: [M]}),
  it trains M members in one compiled program: their states are stacked along a
  leading member axis and every function is `jax.vmap`-ed over it; each member has its
  own seed (initialisation, data order, dropout), peak learning rate (kept in the
  optimizer state) and loss weights, so member m computes exactly what a single run
  with those numbers computes (up to float rounding).
  """

  def __init__(self, config, model: nn.Module, mesh, steps_per_epoch: int,
               members: dict | None = None):
    self.config = config
    self.model = model
    self.mesh = mesh
    self.task = tasks.get_task(config)
    self.members = members
    self.n_members = None if members is None else len(members['seed'])
    self.tx = optim.make_optimizer(config.optimizer, steps_per_epoch, config.num_epochs,
                                   peak_in_state=members is not None)
    self.schedule = optim.make_schedule(config.optimizer, steps_per_epoch, config.num_epochs)
    self.ema_decay = float(config.get('ema_decay', 0.0))
    self.rep = pipeline.replicated(mesh)
    self.data_sharding = pipeline.batch_sharding(mesh)
    # Streamed chunks arrive as [k, B, H, W, C]: shard the batch axis, not the step axis.
    self.stacked_sharding = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(None, pipeline.DATA_AXIS))
    self._compiled = {}
    self.compiler_options = compiler_options(config)

  def _numbers(self):
    """A single run's numbers, as constants of its compiled functions."""
    return {'seed': self.config.seed, **self.task.default_weights}

  def _vmapped(self, fn, in_axes):
    """fn itself for a single run; over the member axis (with each member's numbers as
    the last argument) for members."""
    if self.members is None:
      return lambda *args: fn(*args, self._numbers())
    return lambda *args: jax.vmap(fn, in_axes=(*in_axes, 0))(*args, self.members)

  def _jit(self, key, fn, **kwargs):
    """Compiled once per Trainer (and key), not once per call."""
    if key not in self._compiled:
      self._compiled[key] = jax.jit(fn, compiler_options=self.compiler_options, **kwargs)
    return self._compiled[key]

  def learning_rates(self, step: int) -> list[float]:
    """The rate of the last update applied before `step`, per member (one for a run)."""
    rate = float(self.schedule(max(step - 1, 0)))
    if self.members is None:
      return [rate]
    return [rate / self.config.optimizer.learning_rate * float(lr)
            for lr in self.members['learning_rate']]

  # --- state ---------------------------------------------------------------------

  def init_state(self) -> TrainState:
    return jax.jit(self._init_fn(), out_shardings=self.rep,
                   compiler_options=init_compiler_options())()

  def state_shapes(self):
    """The train state's shapes and dtypes, without allocating it."""
    return jax.eval_shape(self._init_fn())

  def _init_fn(self):
    shape = self.model.opts.image_shape

    def init(numbers):
      # The key is made inside the compiled function: nothing crosses processes.
      key = streams.key(numbers['seed'], 'init')
      variables = self.model.init({'params': key, 'dropout': key}, jnp.zeros((1, *shape)))
      params = variables['params']
      opt_state = self.tx.init(params)
      if 'learning_rate' in numbers and self.members is not None:
        opt_state.hyperparams['peak_learning_rate'] = jnp.asarray(
            numbers['learning_rate'], jnp.float32)
      state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                         batch_stats=variables.get('batch_stats', {}), opt_state=opt_state)
      if not self.ema_decay:
        return state
      return EmaTrainState(**{f.name: getattr(state, f.name) for f in dataclasses.fields(state)},
                           ema_params=params)

    return self._vmapped(init, ())

  # --- training ------------------------------------------------------------------

  def _train_step(self, state: TrainState, batch, numbers):
    """One step on batch = (uint8 images [B, H, W, C], int32 labels [B])."""
    # Dropout noise is a function of (seed, step): exact after a resume.
    rng = streams.key(numbers['seed'], 'dropout', state.step)
    keys = noise_lib.train_keys(numbers['seed'], state.step, batch[0].shape[0])
    batch = (augment(self.config.get('augment', 'none'), batch[0], numbers['seed'], state.step),
             *batch[1:])
    inputs, targets = self.task.pair(*batch, keys)
    weights = {k: numbers[k] for k in self.task.default_weights}

    def loss_fn(params):
      out, updates = self.model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, inputs, train=True,
          rngs={'dropout': rng, 'sample': streams.key(numbers['seed'], 'sample', state.step)},
          mutable=['batch_stats'])
      loss = jnp.mean(self.task.loss(out, targets, weights))
      return loss, updates.get('batch_stats', {})

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(jnp.add, state.params, updates)
    new = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                        opt_state=opt_state)
    if self.ema_decay:  # the average starts short (decay (1 + t) / (10 + t)) so early ones count
      t = state.step.astype(jnp.float32)
      d = jnp.minimum(self.ema_decay, (1 + t) / (10 + t))
      new = new.replace(ema_params=jax.tree.map(lambda e, p: d * e + (1 - d) * p,
                                                state.ema_params, params))
    return new, loss

  def _run_steps(self, k, state, get_batch, numbers):
    if k == 1:
      return self._train_step(state, get_batch(0), numbers)

    def body(state, j):
      return self._train_step(state, get_batch(j), numbers)
    state, losses = jax.lax.scan(body, state, jnp.arange(k))
    return state, losses.mean()

  def train_chunk(self, k: int, on_device: bool):
    """A compiled call running k steps. On device it gathers batch j of the epoch as
    images[perm[(offset + j) * B : ...]] and the same rows of labels (perm [M, n] for
    members: each its own order); streamed, it takes ([k, B, H, W, C] images, [k, B]
    labels). Returns (state, mean loss) ([M] losses for members)."""
    b = self.config.batch_size
    if on_device:
      def chunk(state, images, labels, perm, offset, numbers):
        return self._run_steps(k, state, lambda j: pipeline.device_batch(
            (images, labels), perm, offset + j, b, self.data_sharding), numbers)
      return self._jit(('train', k, True), self._vmapped(chunk, (0, None, None, 0, None)),
                       in_shardings=(self.rep, self.data_sharding, self.data_sharding,
                                     self.rep, None),
                       out_shardings=(self.rep, self.rep), donate_argnums=0)
    if self.members is not None:
      raise ConfigError('members trained together need their data on the devices.')

    def chunk(state, batches):
      return self._run_steps(k, state, lambda j: jax.tree.map(lambda x: x[j], batches),
                             self._numbers())
    return self._jit(('train', k, False), chunk,
                     in_shardings=(self.rep, (self.stacked_sharding, self.stacked_sharding)),
                     out_shardings=(self.rep, self.rep), donate_argnums=0)

  # --- evaluation ----------------------------------------------------------------

  def eval_variables(self, state) -> dict:
    """What evaluation runs: the parameters' moving average where config.ema_decay is on."""
    return {'params': state.ema_params if self.ema_decay else state.params,
            'batch_stats': state.batch_stats}

  def _outputs(self, state, inputs):
    return self.model.apply(self.eval_variables(state), inputs, train=False)

  def _eval_sums(self, state, images_u8, labels, indices, mask, numbers):
    # Evaluation noise is a function of each image's index in its split (noise.py).
    inputs, targets = self.task.pair(images_u8, labels, noise_lib.eval_keys(indices))
    out = self._outputs(state, inputs)
    per_image = self.task.metrics(out, targets, inputs)
    weights = {k: numbers[k] for k in self.task.default_weights}
    per_image['loss'] = self.task.loss(out, targets, weights)
    return metrics_lib.masked_sums(per_image, mask)

  @property
  def eval_batch(self):
    """Masked metric sums of one batch: padded rows (mask False) count for nothing."""
    return self._jit('eval_batch', self._vmapped(self._eval_sums, (0, None, None, None, None)),
                     in_shardings=(self.rep, self.data_sharding, self.data_sharding,
                                   self.data_sharding, self.data_sharding),
                     out_shardings=self.rep)

  @property
  def eval_slice(self):
    """Same as eval_batch on rows [start, start + B) of a split kept on the devices."""
    b = self.config.eval_batch_size

    def fn(state, images, labels, start, n, numbers):
      batch, batch_labels = (jax.lax.with_sharding_constraint(
          jax.lax.dynamic_slice_in_dim(x, start, b), self.data_sharding) for x in (images, labels))
      indices = start + jnp.arange(b)
      return self._eval_sums(state, batch, batch_labels, indices, indices < n, numbers)
    return self._jit('eval_slice', self._vmapped(fn, (0, None, None, None, None)),
                     in_shardings=(self.rep, self.data_sharding, self.data_sharding, None, None),
                     out_shardings=self.rep)

  def evaluate(self, state, split: pipeline.Split) -> list[dict]:
    """Mean metrics over the whole split, one dict per member (one for a single run):
    MSE, L1, PSNR (dB), SSIM, loss, and the count of images."""
    b = self.config.eval_batch_size
    total = None
    for start in range(0, split.n, b):
      if split.on_device:
        sums = self.eval_slice(state, split.images, split.labels, start, split.n)
      else:  # rows past n are zero padding, masked out; each process reads its own rows
        idx = np.arange(start, start + b)
        mask = idx[pipeline.process_rows(self.data_sharding, b)] < split.n
        sums = self.eval_batch(state, *split.global_batch(idx, self.data_sharding),
                               pipeline.to_global(idx[pipeline.process_rows(self.data_sharding, b)]
                                                  .astype(np.int32), self.data_sharding, (b,)),
                               pipeline.to_global(mask, self.data_sharding, (b,)))
      total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    total = jax.device_get(total)
    per_member = ([total] if self.members is None else
                  [jax.tree.map(lambda v, m=m: v[m], total) for m in range(self.n_members)])
    return [{**{k: float(v) for k, v in metrics_lib.finalize(t).items()},
             'count': int(t['count'])} for t in per_member]

  def reconstruct(self, state, images_u8: np.ndarray) -> np.ndarray:
    """Reconstructions [M, n, H, W, C] of the first n images of a split (host images; M = 1
    for a single run; the same on every process). A denoiser sees them with the noise of
    evaluation, as noisy_inputs() gives them."""
    def fn(state, x, numbers):
      del numbers
      labels = jnp.zeros(x.shape[:1], jnp.int32)  # (a reconstruction does not look at them)
      inputs = self.task.pair(x, labels, noise_lib.eval_keys(jnp.arange(x.shape[0])))[0]
      return self._outputs(state, inputs)['reconstruction']
    recon = self._jit('reconstruct', self._vmapped(fn, (0, None)),
                      in_shardings=(self.rep, self.rep), out_shardings=self.rep)
    x = pipeline.to_global(images_u8, self.rep, images_u8.shape)
    out = pipeline.host_copy(recon(state, x))
    return out[None] if self.members is None else out

  def noisy_inputs(self, images_u8: np.ndarray) -> np.ndarray | None:
    """What a denoiser sees of the first n images of a split (None when not denoising)."""
    if not getattr(self.task, 'denoising', False):
      return None
    return noise_lib.noisy_split_images(images_u8, 0, self.task.noise)

  def prior_samples(self, state, n: int) -> np.ndarray:
    """A VAE's decodings [M, n, H, W, C] of n codes drawn from its prior N(0, I), with the
    same codes at every evaluation (the 'sample' stream of seed 0)."""
    def fn(state, numbers):
      del numbers
      z = jax.random.normal(streams.key(0, 'sample', 0), (n, self.model.opts.latent_dim))
      return self.model.apply(self.eval_variables(state), {'latent': z}, method='decode')
    samples = self._jit(('prior', n), self._vmapped(fn, (0,)), in_shardings=(self.rep,),
                        out_shardings=self.rep)
    out = pipeline.host_copy(samples(state))
    return out[None] if self.members is None else out

  def sample_images(self, split: pipeline.Split, n: int) -> np.ndarray:
    """The first n images of a split, as numpy on every process."""
    n = min(n, split.n)
    if split.on_device:
      first = self._jit(('first', n), lambda x: x[:n], out_shardings=self.rep)
      return pipeline.host_copy(first(split.images))
    return split.host_batch(np.arange(n))

  def member_slice(self, state, m: int):
    """Member m's state, as a single run's (for members; the state itself otherwise)."""
    return state if self.members is None else jax.tree.map(lambda a: a[m], state)


# --- the loop ------------------------------------------------------------------------


SECTIONS = ('data', 'model', 'loss', 'optimizer', 'early_stopping')


AUGMENTS = ('none', 'flip', 'flip_crop')
CROP_PAD = 4  # flip_crop's largest shift in pixels: the usual CIFAR "pad 4, crop 32"


def augment(name: str, images: jax.Array, seed, step) -> jax.Array:
  """Training images [B, H, W, C] as the step sees them, drawn from (seed, step) so a resume
  draws the same ones. 'flip': each mirrored left-right with probability 1/2. 'flip_crop':
  flipped so, then shifted by up to CROP_PAD pixels each way, the uncovered border filled
  by reflection (not zeros: an autoencoder must reproduce what it is given, and black bars
  are no part of any test image)."""
  if name == 'none':
    return images
  key = streams.key(seed, 'augment', step)
  flip = jax.random.bernoulli(key, 0.5, images.shape[:1])  # the draw 'flip' always made
  images = jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)
  if name == 'flip':
    return images
  b, h, w, c = images.shape
  p = CROP_PAD
  padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode='reflect')
  offsets = jax.random.randint(jax.random.fold_in(key, 1), (b, 2), 0, 2 * p + 1)
  crop = lambda x, o: jax.lax.dynamic_slice(x, (o[0], o[1], 0), (h, w, c))
  return jax.vmap(crop)(padded, offsets)


def validate(config, n_devices: int):
  for section in SECTIONS:
    if not isinstance(config.get(section), ml_collections.ConfigDict):
      raise ConfigError(f'the config has no {section!r} section; start from configs/default.py '
                        '(import it, change its fields) so every section is there.')
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
  # Every numeric field, before any data is read or anything is written.
  for key, low in (('eval_every_epochs', 1), ('checkpoint_every_epochs', 1),
                   ('keep_checkpoints', 1), ('num_sample_images', 0),
                   ('snapshot_every_epochs', 0)):
    value = config.get(key, 0 if key == 'snapshot_every_epochs' else None)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ConfigError(f'{key} must be an integer >= {low}, got {value!r}; set '
                        f'--config.{key}={max(low, 1)} or more.')
  for key, value in (('log_every_seconds', config.get('log_every_seconds')),
                     ('early_stopping.min_delta', config.early_stopping.get('min_delta'))):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
      raise ConfigError(f'{key} must be a number >= 0, got {value!r}.')
  widths = tuple(config.model.get('widths') or ())
  if any(isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in widths):
    raise ConfigError(f'model.widths must be positive integers (channels per stage), got '
                      f'{widths}; e.g. --config.model.widths="(16, 32, 64, 128)", or "()" for '
                      "the model's own.")
  _cpu_convolution_options(config)
  host_memory.check_name(config.get('cpu_malloc', 'keep'))
  noise_lib.check(config.data.get('noise') or {})
  ema = config.get('ema_decay', 0.0)
  if isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0 <= ema < 1:
    raise ConfigError(f'ema_decay must be a number in [0, 1) (0 = off, e.g. 0.999: evaluate an '
                      f'average of the parameters over about 1,000 steps), got {ema!r}.')
  if config.get('augment', 'none') not in AUGMENTS:
    raise errors.unknown_name('augment', config.get('augment'), AUGMENTS)
  beta = config.model.get('beta', 1.0)
  if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
    raise ConfigError(f'model.beta must be a number >= 0 (the weight of the KL term), got {beta!r}.')
  # Names and values that need no data: checked before anything is read or written.
  tasks.get_task(config)
  optim.make_optimizer(config.optimizer, 1, config.num_epochs)
  if config.model.name not in models_lib.MODELS:
    raise errors.unknown_name('model', config.model.name, models_lib.MODELS)
  # The validation metrics of the model's task (a classifier has accuracy, not PSNR).
  metrics = ('loss',) + tasks.get_task(config).metric_names
  metric = config.early_stopping.metric
  if metric not in metrics:
    raise errors.unknown_name('early-stopping metric', metric, metrics)
  selection = config.get('selection_metric', '')
  if selection and selection not in metrics:
    raise errors.unknown_name('selection_metric', selection, metrics)
  patience = config.early_stopping.patience
  if not isinstance(patience, int) or patience < 0:
    raise ConfigError(f'early_stopping.patience must be an integer >= 0 (0 = off), got '
                      f'{patience!r}.')
  if config.data.name not in sources.dataset_names():
    raise errors.unknown_name('data set', config.data.name, sources.dataset_names())
  h, w, _ = sources.image_shape(config.data.name, image_size=config.data.get('image_size'),
                                channels=config.data.get('channels'))
  if tasks.get_task(config).reconstructs and min(h, w) < metrics_lib.SSIM_WINDOW:
    sized = config.data.name in ('image_folder', 'lfw')
    raise ConfigError(
        f'{config.data.name} images of {h}x{w} pixels are smaller than the '
        f'{metrics_lib.SSIM_WINDOW}x{metrics_lib.SSIM_WINDOW} window SSIM is measured with '
        f'(every autoencoder is scored by SSIM); '
        + (f'set --config.data.image_size to at least ({metrics_lib.SSIM_WINDOW}, '
           f'{metrics_lib.SSIM_WINDOW}).' if sized else 'use larger images.'))


def device_memory_bytes(device) -> tuple[int, str]:
  """(bytes one device can hold, what that is): the accelerator's own limit, or on the CPU the
  memory the machine has available now (all CPU devices of a process share it)."""
  stats = None
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  (not every backend reports)
    pass
  if stats and stats.get('bytes_limit'):
    return int(stats['bytes_limit']), f'one {device.device_kind} holds'
  available = None
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          available = int(line.split()[1]) * 1024
  except OSError:
    pass
  if available is None:
    available = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  n = max(1, len(jax.local_devices()))
  return available // n, ('this machine has available' if n == 1 else
                          f'each of the {n} CPU devices gets of what this machine has available')


def check_memory(trainer: 'Trainer', config, shapes, n_params: int):
  """Refuses, before anything is allocated or written, a model whose train state and
  gradients alone (`shapes`: Trainer.state_shapes()) do not fit one device (each device holds
  a whole replica)."""
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))
  grads = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes.params))
  need = state_bytes + grads
  limit, what = device_memory_bytes(trainer.mesh.devices.flat[0])
  if need > limit:
    gib = lambda b: f'{b / 2**30:,.1f} GiB'
    raise ConfigError(
        f'{config.model.name} here has {n_params:,} parameters: its train state and gradients '
        f'need {gib(need)} per device (parameters, gradients, the {config.optimizer.name} state'
        f'{" and the EMA" if config.get("ema_decay") else ""}), more than the {gib(limit)} '
        f'{what}; make the model smaller (--config.model.latent_dim, hidden_dim or widths).')


def load_data(config, mesh):
  n_dev = mesh.devices.size
  data_dir = os.path.expanduser(config.data.data_dir)
  try:  # a data_dir that is a file, or sits under one, is one sentence, not a TFDS traceback
    os.makedirs(data_dir, exist_ok=True)
  except OSError as e:
    raise ConfigError(f'data.data_dir={config.data.data_dir} cannot be used ({e.strerror or e}); '
                      'set --config.data.data_dir to a folder you can write to.') from None
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


random_streams = streams.context  # (kept here too: benchmarks and studies call it by this name)


StopOnSigterm = preemption.StopOnSigterm  # (the loop reads it by this name)


# --- one run, as parts: create_run, train_call, log_train, evaluate_and_save, finish ----------


@dataclasses.dataclass
class Member:
  """One model being trained: a single run, or one of several members trained together."""
  name: str
  workdir: str
  config: Any
  writer: Any = None


@dataclasses.dataclass
class Run:
  """Everything one run (or one group of members trained together) carries between the
  parts of the loop: what was built, the train state, the bookkeeping saved with each
  checkpoint (`meta`), and the loop's position and timers."""
  config: Any
  workdir: str
  members: list
  mesh: Any
  splits: dict
  model: Any
  bneck: dict | None  # None: a classifier
  trainer: Trainer
  ckpts: Checkpoints
  state: Any
  meta: dict
  steps_per_epoch: int
  total_steps: int
  steps_per_call: int
  n_params: int
  step: int = 0
  perm: Any = None
  prefetch: Any = None
  calls: int = 0
  log_losses: list = dataclasses.field(default_factory=list)
  log_start: int = 0
  last_log: float = 0.0
  seg_start: float = 0.0
  timed_images: int = 0
  timed_seconds: float = 0.0
  first_call: bool = True
  lock: Any = None

  @property
  def grouped(self) -> bool:
    return self.trainer.members is not None


# Per-member entries of the checkpoint record; a list with one entry per member.
_PER_MEMBER = ('best_step', 'best_score', 'best_es', 'bad_evals', 'diverged_at')


def selection_metric(config) -> str:
  """The validation metric that picks the kept (and reported) checkpoint: the configured
  one, else the one early stopping watches (PSNR by default)."""
  return config.get('selection_metric', '') or config.early_stopping.metric


def _new_meta(n: int) -> dict:
  return {'epoch': 0, 'stopped_early': False, 'train_seconds': 0.0, 'images_per_second': None,
          **{k: [0 if k == 'bad_evals' else None] * n for k in _PER_MEMBER}}


def _member_numbers(configs) -> dict:
  """{'seed': [M], 'learning_rate': [M], <loss weights>: [M]} of the members' configs."""
  weights = tasks.get_task(configs[0]).default_weights
  return {'seed': np.array([c.seed for c in configs], np.int32),
          'learning_rate': np.array([c.optimizer.learning_rate for c in configs], np.float32),
          **{k: np.array([tasks.get_task(c).default_weights[k] for c in configs], np.float32)
             for k in weights}}


# The workdir contract (README): what a resume may change. Everything else in the config
# shapes the run's trajectory and must be what the workdir was trained with; num_epochs may
# grow (not below what was trained, and not at all under a schedule that depends on it).
MAY_CHANGE = ('log_every_seconds', 'eval_batch_size', 'num_sample_images', 'keep_checkpoints',
              'snapshot_every_epochs',
              'eval_every_epochs', 'checkpoint_every_epochs', 'steps_per_call',
              'cpu_convolutions', 'cpu_malloc', 'data.data_dir', 'data.source_dir',
              'data.download', 'data.device_memory_limit_mb', 'num_epochs')
# Schedules whose shape depends on the run's length.
LENGTH_DEPENDENT_SCHEDULES = ('warmup_cosine',)


def flat_config(config) -> dict:
  """{'optimizer.learning_rate': 0.001, ...}: every leaf of a ConfigDict (or of its JSON,
  as config.json holds it) as JSON values."""
  def flat(d, prefix):
    out = {}
    for k, v in d.items():
      out.update(flat(v, f'{prefix}{k}.') if isinstance(v, dict) else {f'{prefix}{k}': v})
    return out
  return flat(config if isinstance(config, dict) else json.loads(config.to_json_best_effort()), '')


# Config fields added after runs were written, with the value every run before them had:
# a resume of such a run compares against it (so turning one on is refused, not merged).
ADDED_FIELDS = {'model.blocks': 1, 'model.norm': 'batch', 'ema_decay': 0.0,
                'loss.rd_lambda': 0.01, 'model.stage_blocks': [], 'augment': 'none',
                'model.code': 'spatial'}


def config_diff(saved: dict, now: dict, ignore=()) -> dict:
  """{key: (saved, now)} for the flat config keys that differ. Keys the saved side lacks came
  later, and it ran with their defaults: ADDED_FIELDS' values where known, else not compared.
  A classifier trains on cross-entropy whatever `loss` says (runs written before its loss.name
  had to be cross_entropy say mse): its loss fields are not compared."""
  saved = {**{k: v for k, v in ADDED_FIELDS.items() if k in now}, **saved}
  if now.get('model.name') in models_lib.CLASSIFIERS:
    ignore = (*ignore, *(k for k in saved if k.startswith('loss.')))
  return {k: (saved[k], now.get(k)) for k in sorted(saved)
          if k not in ignore and saved[k] != now.get(k)}


def run_record(config) -> dict:
  """What shapes a run's trajectory (saved with every checkpoint)."""
  return {k: v for k, v in flat_config(config).items()
          if k not in MAY_CHANGE and not k.startswith('study.')}


def check_resume(saved_meta: dict, meta: dict, config, workdir: str):
  """Refuses, in one sentence naming the keys, a resume under other settings."""
  saved = saved_meta.get('run')
  if saved is None:  # written before the record existed
    return
  diff = config_diff(saved, meta['run'])
  if diff:
    raise ConfigError(
        f'{workdir!r} holds a run with other settings (saved vs now: {diff}); a resume may '
        'change only the number of epochs and the logging, evaluation and checkpoint cadence '
        '(README: the workdir contract); use a new --workdir, or the saved settings.')
  trained, before = saved_meta.get('epoch', 0), saved_meta.get('num_epochs')
  if config.num_epochs < trained:
    raise ConfigError(
        f'{workdir!r} has already trained {trained} epochs, more than num_epochs='
        f'{config.num_epochs}; set --config.num_epochs={before or trained} (or more), or use a '
        'new --workdir.')
  schedule = config.optimizer.schedule.name
  if before is not None and config.num_epochs != before and schedule in LENGTH_DEPENDENT_SCHEDULES:
    raise ConfigError(
        f'{workdir!r} was trained for num_epochs={before} under the {schedule} schedule, whose '
        f'shape depends on the run\'s length; num_epochs={config.num_epochs} would change the '
        f'rates already used; keep --config.num_epochs={before}, or use a new --workdir.')


def create_run(config, workdir: str, splits: dict | None = None,
               members: list[tuple[str, str, Any]] | None = None) -> Run:
  """Builds (or resumes) a run: checks the config, reads the data (unless `splits` are
  given: a study reads its data once), builds the model and the compiled steps, and
  restores the newest checkpoint of `workdir`. `members` [(name, workdir, config)]
  trains several configs that differ only in MEMBER_NUMBERS together; their shared
  checkpoints go to `workdir`, each member's metrics and results to its own workdir."""
  config = copy.deepcopy(config)  # the caller's config is never written to
  mesh = pipeline.make_mesh()
  n_dev = mesh.devices.size
  if not config.get('eval_batch_size'):
    config.eval_batch_size = config.batch_size
  validate(config, n_dev)
  numbers = None
  if members is not None:
    numbers = _member_numbers([c for _, _, c in members])
    if config.early_stopping.patience:
      raise ConfigError('members trained together cannot stop early one by one; set '
                        '--config.early_stopping.patience=0 or train them one after another.')
  workdir_lib.check_kind(os.path.abspath(os.path.expanduser(workdir)), 'run')
  workdir, created = workdir_lib.make(workdir)
  lock = workdir_lib.Lock(workdir).__enter__()  # before anything is read or written
  try:
    run = _build_run(config, workdir, splits, members, numbers, mesh)
  except BaseException:
    lock.__exit__()
    if created and not os.listdir(workdir):  # refused: leave no empty workdir behind
      os.rmdir(workdir)
    raise
  run.lock = lock
  return run


def _build_run(config, workdir, splits, members, numbers, mesh) -> Run:
  n_dev = mesh.devices.size
  splits = splits or load_data(config, mesh)
  train = splits['train']
  if members is not None and not train.on_device:
    raise ConfigError('members trained together need the training split on the devices; '
                      'raise --config.data.device_memory_limit_mb or train them one by one.')
  if not splits['validation'].n:
    if not splits['test'].n:
      raise ConfigError(f'{config.data.name} has neither a validation nor a test split here, so '
                        'nothing could be evaluated; set --config.data.validation_size or '
                        '--config.data.test_size to a number of images.')
    if config.early_stopping.patience or config.get('selection_metric'):
      raise ConfigError(
          f'{"early stopping" if config.early_stopping.patience else "choosing the best checkpoint"} '
          f'needs a validation split, and {config.data.name} has none here; set '
          '--config.data.validation_size to a number of images, or turn it off '
          '(--config.early_stopping.patience=0, --config.selection_metric=).')
  model = models_lib.build_model(config.model, train.image_shape, train.num_classes)
  bneck = models_lib.bottleneck(model)
  steps_per_epoch = train.n // config.batch_size
  trainer = Trainer(config, model, mesh, steps_per_epoch, members=(
      None if numbers is None else {k: jnp.asarray(v) for k, v in numbers.items()}))
  shapes = trainer.state_shapes()
  n_params = sum(x.size for x in jax.tree.leaves(shapes.params)) // (
      len(members) if members is not None else 1)
  check_memory(trainer, config, shapes, n_params)
  state = trainer.init_state()
  steps_per_call = config.steps_per_call or DEFAULT_STEPS_PER_CALL.get(jax.default_backend(), 1)
  member_list = ([Member(config.model.name, workdir, config)] if members is None else
                 [Member(name, os.path.abspath(d), c) for name, d, c in members])

  logging.info('%s on %s %s: %d train / %d validation / %d test images, %d devices (%s), '
               '%s parameters, %d steps per call%s%s',
               config.model.name, config.data.name, train.image_shape, train.n,
               splits['validation'].n, splits['test'].n, n_dev, jax.default_backend(),
               f'{n_params:,}', steps_per_call,
               '' if train.on_device else ', training data streamed from the host',
               '' if members is None else f', {len(members)} members trained together')
  logging.info('%s', models_lib.describe_bottleneck(bneck))
  if bneck is not None and bneck['compression_ratio'] <= 1:
    logging.warning('The code (%d floats) is at least as large as the input (%d): this model '
                    'compresses nothing (fine for denoising, not for compression studies).',
                    bneck['floats'], bneck['input_floats'])

  ckpts = Checkpoints(os.path.join(workdir, 'checkpoints'), keep=config.keep_checkpoints)
  meta = _new_meta(len(member_list))
  # What fixes the parameters' shapes and meaning; a workdir may only resume the same.
  options = models_lib.model_options(model)
  meta['model'] = json.loads(json.dumps({'name': config.model.name, **{
      k: options[k] for k in ('image_shape', 'latent_dim', 'widths', 'hidden_dim',
                              'batch_norm', 'skips')}}))
  if numbers is not None:
    meta['members'] = {k: v.tolist() for k, v in numbers.items()}
  meta['run'] = run_record(config)
  meta['num_epochs'] = config.num_epochs

  def check(saved_meta):
    for key in ('model', 'members'):
      saved, now = saved_meta.get(key), meta.get(key)
      if saved is not None and saved != now:
        diff = ({k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
                if isinstance(now, dict) else (saved, now))
        raise ConfigError(
            f'{workdir!r} holds checkpoints of a different {"model" if key == "model" else "set of members"} '
            f'(saved vs now: {diff}); use a new --workdir, or the config that wrote those checkpoints.')
    check_resume(saved_meta, meta, config, workdir)

  try:
    restored = ckpts.restore_latest(state, check)
  except BaseException:  # refused: close orbax's threads, so the process ends quietly
    ckpts.close()
    raise
  if restored is not None:
    step, state, saved = restored
    if 'best_psnr' in saved:  # written before the selection metric: PSNR, higher is better
      saved['best_score'] = saved.pop('best_psnr')
    for k in _PER_MEMBER:  # checkpoints of single runs written before members existed
      if not isinstance(saved.get(k), list):
        saved[k] = [saved.get(k, 0 if k == 'bad_evals' else None)]
    meta.update(saved, run=meta['run'], num_epochs=config.num_epochs)
    logging.info('Resumed from the checkpoint at step %d (epoch %d) in %s.', step,
                 step // steps_per_epoch, workdir)

  for member in member_list:
    os.makedirs(member.workdir, exist_ok=True)
    if writers.is_writer():
      with open(os.path.join(member.workdir, 'config.json'), 'w') as f:
        f.write(member.config.to_json_best_effort(indent=2))
    member.writer = writers.MetricWriter(member.workdir)
  run = Run(config=config, workdir=workdir, members=member_list, mesh=mesh, splits=splits,
            model=model, bneck=bneck, trainer=trainer, ckpts=ckpts, state=state, meta=meta,
            steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * config.num_epochs,
            steps_per_call=steps_per_call, n_params=n_params)
  run.step = run.log_start = int(jax.device_get(state.step).ravel()[0])
  run.seg_start = run.last_log = time.time()
  return run


def _epoch_order(run: Run, epoch: int, offset: int):
  """The permutation of `epoch` (one per member), and for streamed data a background
  reader of the rest of the epoch's chunks, in order (each process reads only its
  devices' rows of each [k, B] chunk)."""
  train = run.splits['train']
  if run.grouped:
    run.perm = pipeline.epoch_permutations(run.trainer.members['seed'], epoch, train.n, run.mesh)
    return
  run.perm = pipeline.epoch_permutation(run.config.seed, epoch, train.n, run.mesh)
  if not train.on_device:
    if run.prefetch is not None:
      run.prefetch.close()
    b, spc, spe = run.config.batch_size, run.steps_per_call, run.steps_per_epoch
    host_perm = pipeline.host_copy(run.perm)
    chunks = [(o, min(spc, spe - o)) for o in range(offset, spe, spc)]
    run.prefetch = pipeline.Prefetcher(
        lambda c, p=host_perm: train.global_batch(
            p[c[0] * b:(c[0] + c[1]) * b].reshape(c[1], b), run.trainer.stacked_sharding, axis=1),
        chunks)


def train_call(run: Run):
  """One device call: up to steps_per_call steps, never past the end of the epoch."""
  train = run.splits['train']
  epoch, offset = divmod(run.step, run.steps_per_epoch)
  if offset == 0 or run.perm is None:
    _epoch_order(run, epoch, offset)
  k = min(run.steps_per_call, run.steps_per_epoch - offset)
  if train.on_device:
    run.state, loss = run.trainer.train_chunk(k, True)(run.state, train.images, train.labels,
                                                       run.perm, offset)
  else:
    run.state, loss = run.trainer.train_chunk(k, False)(run.state, run.prefetch.get())
  run.step += k
  run.calls += 1
  run.log_losses.append((run.step, loss))
  # Throughput is timed from the end of the first call (compilation) to the last step.
  if run.first_call:
    jax.block_until_ready(run.state)
    run.meta['train_seconds'] += time.time() - run.seg_start
    run.seg_start, run.first_call = time.time(), False
  else:
    run.timed_images += k * run.config.batch_size


def check_finite(run: Run) -> list[float]:
  """The mean training loss of each member since the last read-back (the only host sync
  of training). A NaN/Inf loss stops a single run, naming the step (the last good
  checkpoint stays on disk); a member trained with others is marked diverged and the
  others go on, unless all have diverged."""
  n = len(run.members)
  if not run.log_losses:
    return [float('nan')] * n
  values = [np.reshape(v, (-1,)) for v in jax.device_get([l for _, l in run.log_losses])]
  for (at, _), value in zip(run.log_losses, values):
    for m in np.flatnonzero(~np.isfinite(value)):
      if run.meta['diverged_at'][m] is None:
        run.meta['diverged_at'][m] = at
        if run.grouped:
          logging.warning('Member %s diverged at step %d (loss %s); the others go on.',
                          run.members[m].name, at, value[m])
    if all(d is not None for d in run.meta['diverged_at']):
      run.ckpts.wait()  # an asynchronous save still in flight is finished, not left half-written
      good = run.ckpts.latest_step()
      raise errors.DivergedError(
          f'The training loss became {float(np.mean(value))} at step {at}; the last good '
          f'checkpoint ({"none yet" if good is None else f"step {good}"}) is kept in '
          f'{run.workdir!r}; lower --config.optimizer.learning_rate or set '
          '--config.optimizer.grad_clip_norm and run again.')
  return [float(x) for x in np.mean(values, axis=0)]


def log_train(run: Run):
  """Writes each member's mean training loss, learning rate and images/s since the last
  write (train rows of metrics.jsonl and TensorBoard)."""
  losses = check_finite(run)
  now = time.time()
  rate = (run.step - run.log_start) * run.config.batch_size / max(now - run.last_log, 1e-9)
  rates = run.trainer.learning_rates(run.step)
  logging.info('epoch %d/%d step %d/%d loss %s lr %s %.0f img/s, %s left',
               (run.step - 1) // run.steps_per_epoch + 1, run.config.num_epochs, run.step,
               run.total_steps, ' '.join(f'{l:.5f}' for l in losses),
               ' '.join(f'{r:.2e}' for r in rates), rate,
               _fmt_time((run.total_steps - run.step) * run.config.batch_size / max(rate, 1e-9)))
  for member, loss, lr in zip(run.members, losses, rates):
    member.writer.write(run.step, 'train', {
        'loss': loss, 'learning_rate': lr,
        # training seconds so far (evaluation excluded): S3's loss against wall-clock time
        'seconds': run.meta['train_seconds'] + (now - run.seg_start),
        'images_per_second': rate})
  run.last_log, run.log_losses, run.log_start = now, [], run.step


def write_snapshots(run: Run):
  """Each member's reconstruction snapshot of the first validation images: originals, (a
  denoiser's noisy inputs,) outputs, as reconstructions/step_N.png (flax_cae.visualize
  stacks them) and in TensorBoard. Written at every evaluation and every
  `snapshot_every_epochs`."""
  if not (run.trainer.task.reconstructs and run.splits['validation'].n):
    return
  sample = run.trainer.sample_images(run.splits['validation'], run.config.num_sample_images)
  recons = run.trainer.reconstruct(run.state, sample)
  noisy = run.trainer.noisy_inputs(sample)
  if not writers.is_writer():
    return
  for m, member in enumerate(run.members):
    grid = writers.reconstruction_grid(sample / 255.0, *([] if noisy is None else [noisy]),
                                       recons[m])
    writers.save_png(os.path.join(member.workdir, 'reconstructions', f'step_{run.step:08d}.png'),
                     grid)
    member.writer.image(run.step, 'validation/reconstructions', grid)


def evaluate_and_save(run: Run, epoch: int):
  """Validation metrics and a picture per member, early-stopping bookkeeping; a checkpoint
  when one is due, when a member's model is its best so far by the selection metric (so it
  is kept), or when training stops. Without a validation split: only the checkpoint."""
  config, meta, step = run.config, run.meta, run.step
  improved, scores = False, None
  if run.splits['validation'].n:
    vals = run.trainer.evaluate(run.state, run.splits['validation'])
    write_snapshots(run)
    if run.trainer.task.samples_prior:
      priors = run.trainer.prior_samples(run.state, max(config.num_sample_images, 1))
    es_metric, selection = config.early_stopping.metric, selection_metric(config)
    scores = [(-1.0 if selection in MINIMIZED else 1.0) * v[selection] if d is None
              else float('nan') for v, d in zip(vals, meta['diverged_at'])]
    for m, (member, val) in enumerate(zip(run.members, vals)):
      member.writer.write(step, 'validation', val)
      logging.info('epoch %d step %d validation%s: %s', epoch, step,
                   f' ({member.name})' if run.grouped else '',
                   ', '.join(f'{k} {v:.4f}' for k, v in val.items() if k != 'count'))
      if run.trainer.task.samples_prior and writers.is_writer():
        writers.save_png(os.path.join(member.workdir, 'samples', f'step_{step:08d}.png'),
                         writers.reconstruction_grid(priors[m]))
      if meta['diverged_at'][m] is not None:
        continue
      es_score = (-1.0 if es_metric in MINIMIZED else 1.0) * val[es_metric]
      if meta['best_es'][m] is None or es_score > meta['best_es'][m] + config.early_stopping.min_delta:
        meta['best_es'][m], meta['bad_evals'][m] = es_score, 0
      else:
        meta['bad_evals'][m] += 1
      if meta['best_score'][m] is None or scores[m] > meta['best_score'][m]:
        meta['best_score'][m], meta['best_step'][m] = scores[m], step
        improved = True
    patience = config.early_stopping.patience
    if patience and meta['bad_evals'][0] >= patience:
      meta['stopped_early'] = True
      logging.info('Early stopping at epoch %d: validation %s did not improve for %d evals.',
                   epoch, es_metric, patience)
  meta['epoch'] = epoch
  if (improved or epoch % config.checkpoint_every_epochs == 0 or step == run.total_steps
      or meta['stopped_early']):
    run.ckpts.save(step, run.state, meta, metrics=None if scores is None else {
        SCORE: scores if run.grouped else scores[0]})


def save_on_stop(run: Run, why: str = 'SIGTERM') -> dict:
  """SIGTERM or Ctrl-C: saves the step reached (unless just saved) and says how to resume."""
  check_finite(run)
  if run.step not in run.ckpts.all_steps():  # not just saved at an epoch's end
    run.meta['epoch'] = run.step // run.steps_per_epoch
    run.meta['train_seconds'] += time.time() - run.seg_start
    run.ckpts.save(run.step, run.state, run.meta)
  close(run)
  logging.warning('Stopped by %s at step %d of %d; its checkpoint is in %s. Run the '
                  'same command to resume.', why, run.step, run.total_steps, run.ckpts.directory)
  return {'preempted': True, 'step': run.step, 'total_steps': run.total_steps}


def release(run: Run):
  """Stops the host reader and gives the workdir back (also when the run failed)."""
  if run.prefetch is not None:
    run.prefetch.close()
  if run.lock is not None:
    run.lock.__exit__()


def close(run: Run):
  release(run)
  run.ckpts.close()
  for member in run.members:
    member.writer.close()


def train_epochs(run: Run, stop) -> dict | None:
  """Trains to the end (or early stop); returns save_on_stop's record if SIGTERM came."""
  config = run.config
  while run.step < run.total_steps and not run.meta['stopped_early']:
    train_call(run)
    if time.time() - run.last_log >= config.log_every_seconds or run.step == run.total_steps:
      log_train(run)
    if run.step % run.steps_per_epoch == 0:
      epoch = run.step // run.steps_per_epoch
      if (epoch % config.eval_every_epochs == 0 or epoch % config.checkpoint_every_epochs == 0
          or run.step == run.total_steps):
        if run.log_losses:  # the train curve gets a point at every evaluation
          log_train(run)
        seconds = time.time() - run.seg_start
        run.meta['train_seconds'] += seconds
        run.timed_seconds += seconds
        evaluate_and_save(run, epoch)
        run.seg_start = run.last_log = time.time()
      elif config.get('snapshot_every_epochs') and epoch % config.snapshot_every_epochs == 0:
        seconds = time.time() - run.seg_start  # (pictures are not training time)
        run.meta['train_seconds'] += seconds
        run.timed_seconds += seconds
        write_snapshots(run)
        run.seg_start = run.last_log = time.time()
    if stop.reached(run.calls) and run.step < run.total_steps and not run.meta['stopped_early']:
      return save_on_stop(run, stop.signalled or 'SIGTERM')
  if run.timed_images:
    run.meta['images_per_second'] = run.timed_images / max(run.timed_seconds, 1e-9)
  run.ckpts.wait()
  return None


def finish(run: Run) -> list[dict]:
  """Test and validation metrics of each member's kept model (its best checkpoint by the
  selection metric; the last model where there is no validation split); writes each
  member's results.json and results.md and returns them. Without a test split, the
  validation numbers are the reported ones (results say which)."""
  config, meta, train = run.config, run.meta, run.splits['train']
  has_val, has_test = run.splits['validation'].n > 0, run.splits['test'].n > 0
  shown = run.splits['test' if has_test else 'validation']
  evaluated = {}  # kept step -> (test, validation, reconstructions) of every member there
  pictures = run.trainer.task.reconstructs
  sample = run.trainer.sample_images(shown, config.num_sample_images) if pictures else None
  results = []
  for m, member in enumerate(run.members):
    c = member.config
    kept = meta['best_step'][m] if has_val else run.step
    result = {
        'model': c.model.name, 'data': c.data.name, 'loss': c.loss.name,
        'optimizer': c.optimizer.name, 'learning_rate': c.optimizer.learning_rate,
        'seed': c.seed, 'image_shape': list(train.image_shape),
        'eval_split': 'test' if has_test else 'validation',
        'selection_metric': selection_metric(config) if has_val else None,
        'best_step': kept, 'total_steps': run.total_steps,
        'stopped_early': meta['stopped_early'], 'diverged_at_step': meta['diverged_at'][m],
        'task': tasks.task_name(c),
        **({} if run.bneck is None else {
            'bottleneck_floats': run.bneck['floats'], 'bottleneck_parts': run.bneck['parts'],
            'input_floats': run.bneck['input_floats'],
            'compression_ratio': run.bneck['compression_ratio']}),
        'bottleneck_text': models_lib.describe_bottleneck(run.bneck),
        'parameters': run.n_params, 'train_seconds': meta['train_seconds'],
        'images_per_second': meta['images_per_second'], 'devices': run.mesh.devices.size,
        'backend': jax.default_backend(), 'model_options': models_lib.model_options(run.model),
        'members_trained_together': len(run.members) if run.grouped else 1,
    }
    if meta['diverged_at'][m] is None and kept is not None:
      if kept not in evaluated:
        state = run.state
        if kept != run.step:
          state, _ = run.ckpts.restore(kept, run.state)
        evaluated[kept] = tuple(
            run.trainer.evaluate(state, run.splits[name]) if ok else [None] * len(run.members)
            for name, ok in (('test', has_test), ('validation', has_val))
        ) + (run.trainer.reconstruct(state, sample) if pictures else [None] * len(run.members),)
      test, val, recon = (x[m] for x in evaluated[kept])
      if pictures and writers.is_writer():  # the first test images and their reconstructions
        np.savez_compressed(os.path.join(member.workdir, 'test_samples.npz'),
                            images=sample, reconstructions=recon)
      for name, values in (('test', test), ('validation', val)):
        if values is not None:
          result.update({f'{name}_{k}': v for k, v in values.items() if k != 'count'})
      reported = test if has_test else val
      if has_test:
        member.writer.write(kept, 'test', test)
      logging.info('%s%s: %s (%s, step %s).',
                   result['eval_split'].capitalize(), f' ({member.name})' if run.grouped else '',
                   run.trainer.task.summary(reported),
                   f'best checkpoint by validation {selection_metric(config)}' if has_val
                   else 'last model: no validation split', kept)
    writers.write_results(member.workdir, result)
    results.append(result)
  close(run)
  return results


def train_and_evaluate(config, workdir: str, splits: dict | None = None) -> dict:
  """Trains `config.model` on `config.data` in `workdir` (resuming if it holds checkpoints)
  and returns the results dict also written to results.json; stopped by SIGTERM, it saves
  and returns {'preempted': True, 'step': ..., 'total_steps': ...} instead."""
  with random_streams(), StopOnSigterm() as stop:
    run = create_run(config, workdir, splits)
    try:
      return train_epochs(run, stop) or finish(run)[0]
    finally:
      release(run)


def train_members(config, workdir: str, members: list[tuple[str, str, Any]],
                  splits: dict | None = None) -> list[dict] | dict:
  """Trains members [(name, member workdir, config)] that differ only in MEMBER_NUMBERS
  in one compiled program (vmapped over the member axis), with their shared checkpoints
  in `workdir`. Returns each member's results (or save_on_stop's record)."""
  with random_streams(), StopOnSigterm() as stop:
    run = create_run(config, workdir, splits, members=members)
    try:
      return train_epochs(run, stop) or finish(run)
    finally:
      release(run)
