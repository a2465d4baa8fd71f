"""The workdir contract of one run (docs/workdir.md): what a resume may change, and the one-sentence
refusal of anything else. Each checkpoint carries `run_record(config)`; a resume compares it
with the config it is given."""

import json


from flax_cae import models as models_lib
from flax_cae.runtime.errors import ConfigError


# The workdir contract (docs/workdir.md): what a resume may change. Everything else in the config
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
        '(docs/workdir.md: the workdir contract); use a new --workdir, or the saved settings.')
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
