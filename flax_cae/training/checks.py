"""What is refused before anything is read, allocated or written: config values
(`validate`) and a train state that cannot fit one device (`check_memory`)."""

import os

import jax
import ml_collections

from flax_cae import models as models_lib
from flax_cae.data import noise as noise_lib
from flax_cae.data import sources
from flax_cae.measures import metrics as metrics_lib
from flax_cae.runtime import errors
from flax_cae.runtime import host_memory
from flax_cae.runtime import xla
from flax_cae.runtime.errors import ConfigError
from flax_cae.training import augment as augment_lib
from flax_cae.training import optim
from flax_cae.training import tasks
from flax_cae.training.trainer import Trainer


SECTIONS = ('data', 'model', 'loss', 'optimizer', 'early_stopping')


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
  xla.cpu_convolution_options(config)
  host_memory.check_name(config.get('cpu_malloc', 'keep'))
  noise_lib.check(config.data.get('noise') or {})
  ema = config.get('ema_decay', 0.0)
  if isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0 <= ema < 1:
    raise ConfigError(f'ema_decay must be a number in [0, 1) (0 = off, e.g. 0.999: evaluate an '
                      f'average of the parameters over about 1,000 steps), got {ema!r}.')
  if config.get('augment', 'none') not in augment_lib.AUGMENTS:
    raise errors.unknown_name('augment', config.get('augment'), augment_lib.AUGMENTS)
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


def check_memory(trainer: Trainer, config, shapes, n_params: int):
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
