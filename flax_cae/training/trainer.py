"""The compiled steps: `Trainer` builds the train state and the jitted train, evaluation and
reconstruction steps of one model on a 1-D data-parallel `Mesh` (parameters replicated,
batches sharded along the batch axis, the train state donated), optionally vmapped over
members trained together. `config.steps_per_call` steps run per device call (a `lax.scan`
when > 1)."""

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flax_cae.data import noise as noise_lib
from flax_cae.data import pipeline
from flax_cae.measures import metrics as metrics_lib
from flax_cae.runtime import streams
from flax_cae.runtime import xla
from flax_cae.runtime.errors import ConfigError
from flax_cae.training import augment as augment_lib
from flax_cae.training import optim
from flax_cae.training import tasks


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
    self.compiler_options = xla.compiler_options(config)

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
                   compiler_options=xla.init_compiler_options())()

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
    batch = (augment_lib.augment(self.config.get('augment', 'none'), batch[0], numbers['seed'], state.step),
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
