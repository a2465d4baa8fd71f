"""Optimizers and learning-rate schedules, chosen by name from the config.

Config (an `ml_collections.ConfigDict`; missing keys take the defaults in
`DEFAULTS` and `SCHEDULE_DEFAULTS`):

  name: one of `optimizer_names()`; S1 compared seven and found Adam and
    Adamax best.
  learning_rate: peak learning rate, > 0.
  weight_decay: >= 0. Decoupled (scaled by the learning rate, not the
    gradient statistics) in `adamw` and `lion`, whose papers define it so.
    Every other optimizer gets classic coupled L2 decay, weight_decay * params
    added to the gradient before the optimizer, like PyTorch's `weight_decay`
    argument (S4's "Adam, weight decay 1e-5" most likely meant this).
  grad_clip_norm: clip the gradient to this global norm; 0 turns it off.
  momentum, nesterov: `sgd` only (momentum 0 means plain SGD; nesterov needs
    momentum > 0). `rmsprop` runs without momentum, as in Keras and PyTorch.
  b1, b2: adam, adamax, adamw, nadam, lion (lion's paper uses b2 = 0.99).
  eps: adam, adamax, adamw, nadam, rmsprop, adagrad, adadelta (adadelta's
    paper uses 1e-6; with 1e-8 its first steps are ~10x smaller).
  rho: gradient-square decay of rmsprop and adadelta (default 0.9).
  schedule.name: one of `schedule_names()`.
  schedule.warmup_epochs: linear warmup from 0 to learning_rate (all
    schedules); must be shorter than training.
  schedule.decay_rate: factor of `warmup_exponential` and `step`.
  schedule.decay_epochs: `step`: epochs (from the start of training) at which
    the rate is multiplied by decay_rate; `warmup_exponential`: (period,), the
    rate is multiplied by decay_rate every `period` epochs.
  schedule.end_value_factor: `warmup_cosine` ends at this * learning_rate.

Durations are in epochs (fractions allowed) and become steps via
`steps_per_epoch`, rounded to the nearest step.

The learning rate is injected with `optax.inject_hyperparams` around the whole
chain, so the training loop can log it without recomputing the schedule:
`opt_state.hyperparams['learning_rate']` is the rate the most recent update
used (schedule(0) right after `init`, schedule(k - 1) after k updates).
"""

import math
import operator
from typing import Any, Callable, Mapping, Union

import jax.numpy as jnp
import ml_collections
import optax

from flax_cae.runtime import errors

Config = Union[ml_collections.ConfigDict, Mapping[str, Any]]

DEFAULTS = {
    'name': 'adam',
    'learning_rate': 1e-3,
    'weight_decay': 0.0,
    'grad_clip_norm': 0.0,
    'momentum': 0.9,
    'nesterov': False,
    'b1': 0.9,
    'b2': 0.999,
    'eps': 1e-8,
    'rho': 0.9,
}

SCHEDULE_DEFAULTS = {
    'name': 'constant',
    'warmup_epochs': 0.0,
    'decay_rate': 0.1,
    'decay_epochs': (),
    'end_value_factor': 0.0,
}


def _get(config: Config, key: str, defaults: Mapping[str, Any]) -> Any:
  value = config.get(key, None) if config is not None else None
  return defaults[key] if value is None else value


def _number(config: Config, key: str, defaults: Mapping[str, Any],
            prefix: str) -> float:
  """Reads config[key] as a float, or raises ConfigError naming the key."""
  value = _get(config, key, defaults)
  try:
    number = float(value)
  except (TypeError, ValueError):
    number = math.nan
  if isinstance(value, bool) or math.isnan(number):
    raise errors.ConfigError(
        f'{prefix}{key} must be a number but is {value!r}; set it to a float '
        f'such as {defaults[key]!r}.')
  return number


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise errors.ConfigError(message)


# Schedules ------------------------------------------------------------------


def _linear_warmup(learning_rate: float, warmup_steps: int,
                   after: optax.Schedule) -> optax.Schedule:
  """lr * step / warmup_steps before warmup_steps, then `after(step)`.

  `after` takes the absolute step (counted from the start of training).
  """
  if warmup_steps == 0:
    return after
  warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)

  def schedule(step):
    return jnp.where(step < warmup_steps, warmup(step), after(step))

  return schedule


def _constant(lr, warmup_steps, total_steps, steps_per_epoch, cfg):
  del total_steps, steps_per_epoch, cfg
  return _linear_warmup(lr, warmup_steps,
                        lambda step: jnp.full(jnp.shape(step), lr, jnp.float32))


def _warmup_cosine(lr, warmup_steps, total_steps, steps_per_epoch, cfg):
  """Cosine from lr at the end of warmup to end_value_factor * lr at the end."""
  del steps_per_epoch
  factor = _number(cfg, 'end_value_factor', SCHEDULE_DEFAULTS, 'schedule.')
  _check(0.0 <= factor <= 1.0,
         f'schedule.end_value_factor must be in [0, 1] but is {factor}; it is '
         'the final learning rate as a fraction of the peak, e.g. 0.0 or 0.01.')
  # optax counts decay_steps from step 0, warmup included; the cosine itself
  # runs over total_steps - warmup_steps and stays at the end value after.
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=lr, warmup_steps=warmup_steps,
      decay_steps=total_steps, end_value=factor * lr)


def _decay_rate(cfg) -> float:
  rate = _number(cfg, 'decay_rate', SCHEDULE_DEFAULTS, 'schedule.')
  _check(rate > 0.0,
         f'schedule.decay_rate must be > 0 but is {rate}; it multiplies the '
         'learning rate at each decay, e.g. 0.1 or 0.5.')
  return rate


def _decay_epochs(cfg) -> tuple[float, ...]:
  value = _get(cfg, 'decay_epochs', SCHEDULE_DEFAULTS)
  if isinstance(value, (int, float)):
    value = (value,)
  try:
    epochs = tuple(float(e) for e in value)
  except (TypeError, ValueError):
    raise errors.ConfigError(
        f'schedule.decay_epochs must be a tuple of epochs but is {value!r}; '
        'set it like (30, 60).') from None
  _check(all(e > 0 for e in epochs),
         f'schedule.decay_epochs must all be > 0 but are {epochs}; give epochs '
         'counted from the start of training, like (30, 60).')
  return epochs


def _warmup_exponential(lr, warmup_steps, total_steps, steps_per_epoch, cfg):
  """lr * decay_rate ** (steps after warmup / period): smooth, not a staircase.

  The rate is exactly lr * decay_rate**k after k periods of decay_epochs[0]
  epochs past the end of warmup, and decays continuously in between.
  """
  del total_steps
  rate = _decay_rate(cfg)
  epochs = _decay_epochs(cfg)
  _check(len(epochs) == 1,
         f'schedule.decay_epochs must hold exactly one period for '
         f'warmup_exponential but is {epochs}; set it like (10,) to multiply '
         'the rate by decay_rate every 10 epochs.')
  period = max(1, round(epochs[0] * steps_per_epoch))
  return optax.warmup_exponential_decay_schedule(
      init_value=0.0, peak_value=lr, warmup_steps=warmup_steps,
      transition_steps=period, decay_rate=rate)


def _step(lr, warmup_steps, total_steps, steps_per_epoch, cfg):
  """lr * decay_rate ** (number of decay_epochs reached), after warmup."""
  del total_steps
  rate = _decay_rate(cfg)
  boundaries = jnp.asarray(
      sorted(round(e * steps_per_epoch) for e in _decay_epochs(cfg)),
      jnp.int32)

  def after(step):
    # Counting boundaries passed (instead of optax.piecewise_constant_schedule's
    # dict) keeps two epochs that round to the same step as two decays.
    passed = jnp.sum(jnp.asarray(step)[..., None] >= boundaries, axis=-1)
    return lr * jnp.power(jnp.float32(rate), passed)

  return _linear_warmup(lr, warmup_steps, after)


_SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    'constant': _constant,
    'warmup_cosine': _warmup_cosine,
    'warmup_exponential': _warmup_exponential,
    'step': _step,
}


def schedule_names() -> list[str]:
  """The valid values of `config.schedule.name`, sorted."""
  return sorted(_SCHEDULES)


def _learning_rate(config: Config) -> float:
  lr = _number(config, 'learning_rate', DEFAULTS, 'optimizer.')
  _check(lr > 0.0 and math.isfinite(lr),
         f'optimizer.learning_rate must be > 0 but is {lr}; set a positive '
         'rate such as 1e-3.')
  return lr


def make_schedule(config: Config, steps_per_epoch: int,
                  num_epochs: float) -> optax.Schedule:
  """The learning-rate schedule: step (int, from 0) -> learning rate.

  Args:
    config: the optimizer config (reads `learning_rate` and `schedule.*`).
    steps_per_epoch: optimizer steps per epoch, >= 1.
    num_epochs: length of training in epochs, > 0 (fractions allowed).

  Returns:
    A jit-compatible optax schedule returning float32.

  Raises:
    ConfigError: unknown schedule name, non-positive learning rate, warmup not
      shorter than training, or another out-of-range value.
  """
  lr = _learning_rate(config)
  cfg = config.get('schedule', None) or {}
  name = _get(cfg, 'name', SCHEDULE_DEFAULTS)
  if name not in _SCHEDULES:
    raise errors.unknown_name('schedule', str(name), _SCHEDULES)
  try:
    steps_per_epoch = operator.index(steps_per_epoch)  # ints, numpy ints
  except TypeError:
    steps_per_epoch = 0
  _check(steps_per_epoch >= 1,
         'steps_per_epoch must be a positive integer; check that the data set '
         'holds at least one batch.')
  _check(num_epochs > 0,
         f'num_epochs must be > 0 but is {num_epochs}; train for at least one '
         'epoch.')
  total_steps = max(1, round(num_epochs * steps_per_epoch))
  warmup_epochs = _number(cfg, 'warmup_epochs', SCHEDULE_DEFAULTS, 'schedule.')
  _check(warmup_epochs >= 0.0,
         f'schedule.warmup_epochs must be >= 0 but is {warmup_epochs}; use 0 '
         'for no warmup.')
  warmup_steps = round(warmup_epochs * steps_per_epoch)
  _check(warmup_steps < total_steps,
         f'schedule.warmup_epochs ({warmup_epochs}) must be shorter than '
         f'training ({num_epochs} epochs); lower warmup_epochs or train '
         'longer.')
  return _SCHEDULES[name](lr, warmup_steps, total_steps, steps_per_epoch, cfg)


# Optimizers -----------------------------------------------------------------
# Each builder maps (learning_rate, config values) to the bare optimizer;
# clipping and coupled weight decay are chained in front by make_optimizer.


def _sgd(lr, c):
  momentum = c['momentum'] or None  # optax: None = no momentum buffer.
  return optax.sgd(lr, momentum=momentum,
                   nesterov=c['nesterov'] and momentum is not None)


def _rmsprop(lr, c):
  # No momentum: `momentum` defaults to SGD's 0.9, while RMSprop as compared
  # in the papers (Keras and PyTorch defaults) has none.
  return optax.rmsprop(lr, decay=c['rho'], eps=c['eps'])


_OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    'adam': lambda lr, c: optax.adam(lr, b1=c['b1'], b2=c['b2'], eps=c['eps']),
    'adamax': lambda lr, c: optax.adamax(lr, b1=c['b1'], b2=c['b2'],
                                         eps=c['eps']),
    'adamw': lambda lr, c: optax.adamw(lr, b1=c['b1'], b2=c['b2'], eps=c['eps'],
                                       weight_decay=c['weight_decay']),
    'nadam': lambda lr, c: optax.nadam(lr, b1=c['b1'], b2=c['b2'],
                                       eps=c['eps']),
    'sgd': _sgd,
    'rmsprop': _rmsprop,
    'adagrad': lambda lr, c: optax.adagrad(lr, eps=c['eps']),
    'adadelta': lambda lr, c: optax.adadelta(lr, rho=c['rho'], eps=c['eps']),
    'lion': lambda lr, c: optax.lion(lr, b1=c['b1'], b2=c['b2'],
                                     weight_decay=c['weight_decay']),
}

# Their weight decay is decoupled and built in; all others get coupled L2.
_DECOUPLED_DECAY = frozenset({'adamw', 'lion'})


def optimizer_names() -> list[str]:
  """The valid values of `config.name`, sorted."""
  return sorted(_OPTIMIZERS)


def _optimizer_values(config: Config) -> dict[str, Any]:
  """Reads and range-checks the optimizer's numeric settings."""
  c = {key: _number(config, key, DEFAULTS, 'optimizer.')
       for key in ('weight_decay', 'grad_clip_norm', 'momentum', 'b1', 'b2',
                   'eps', 'rho')}
  c['nesterov'] = bool(_get(config, 'nesterov', DEFAULTS))
  for key in ('weight_decay', 'grad_clip_norm'):
    _check(c[key] >= 0.0,
           f'optimizer.{key} must be >= 0 but is {c[key]}; use 0 to turn it '
           'off.')
  for key in ('momentum', 'b1', 'b2', 'rho'):
    _check(0.0 <= c[key] < 1.0,
           f'optimizer.{key} must be in [0, 1) but is {c[key]}; typical '
           f'values are 0.9 to 0.999 (default {DEFAULTS[key]}).')
  _check(c['eps'] > 0.0,
         f'optimizer.eps must be > 0 but is {c["eps"]}; it guards a division, '
         'e.g. 1e-8.')
  return c


def make_optimizer(config: Config, steps_per_epoch: int, num_epochs: float,
                   peak_in_state: bool = False) -> optax.GradientTransformation:
  """The optimizer: [clip by global norm] -> [coupled L2] -> optimizer.

  Clipping sees the loss gradient alone, so the clip norm means the same with
  or without weight decay.

  Args:
    config: the optimizer config (see the module docstring).
    steps_per_epoch: optimizer steps per epoch, >= 1.
    num_epochs: length of training in epochs, > 0.

    peak_in_state: keep the peak learning rate as a number in the optimizer
      state (`hyperparams['peak_learning_rate']`, the schedule then runs at
      peak 1 in `hyperparams['learning_rate']`), so that members trained
      together (`jax.vmap` over stacked states) can each have their own rate.
      Every optimizer here ends by scaling its update by the rate, so this is
      the same optimizer up to float rounding.

  Returns:
    An optax transformation wrapped in `optax.inject_hyperparams`: its state
    has `hyperparams['learning_rate']`, the rate of the latest update (times
    `hyperparams['peak_learning_rate']` with peak_in_state).

  Raises:
    ConfigError: unknown optimizer or schedule name, or an out-of-range value.
  """
  name = _get(config, 'name', DEFAULTS)
  if name not in _OPTIMIZERS:
    raise errors.unknown_name('optimizer', str(name), _OPTIMIZERS)
  c = _optimizer_values(config)
  if peak_in_state:
    peak = _learning_rate(config)
    config = {**dict(config), 'learning_rate': 1.0}
  schedule = make_schedule(config, steps_per_epoch, num_epochs)

  def chain(learning_rate, peak_learning_rate=None):
    if peak_learning_rate is not None:
      learning_rate = learning_rate * peak_learning_rate
    parts = []
    if c['grad_clip_norm'] > 0:
      parts.append(optax.clip_by_global_norm(c['grad_clip_norm']))
    if c['weight_decay'] > 0 and name not in _DECOUPLED_DECAY:
      parts.append(optax.add_decayed_weights(c['weight_decay']))
    parts.append(_OPTIMIZERS[name](learning_rate, c))
    return optax.chain(*parts)

  if peak_in_state:
    return optax.inject_hyperparams(chain)(learning_rate=schedule, peak_learning_rate=peak)
  return optax.inject_hyperparams(chain)(learning_rate=schedule)
