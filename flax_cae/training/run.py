"""A run: what the loop carries between its parts (`Run`), and how one is built or resumed
(`create_run`): checks, data, model, compiled steps, the workdir's lock and its newest
checkpoint."""

import copy
import dataclasses
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from flax_cae import models as models_lib
from flax_cae.data import pipeline
from flax_cae.data import sources
from flax_cae.runtime import workdir as workdir_lib
from flax_cae.runtime import writers
from flax_cae.runtime import xla
from flax_cae.runtime.checkpoint import Checkpoints
from flax_cae.runtime.errors import ConfigError
from flax_cae.training import checks
from flax_cae.training import resume
from flax_cae.training import tasks
from flax_cae.training.trainer import Trainer


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
  bar: Any = None  # the progress bar while training (runtime/console.py)

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
  checks.validate(config, n_dev)
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


def _restore(ckpts: Checkpoints, state, meta: dict, config, workdir: str, steps_per_epoch: int):
  """The newest checkpoint of `workdir` into `state` and `meta` (none: `state` as built),
  after checking that it was written by this model, these members and these settings."""
  def check(saved_meta):
    for key in ('model', 'members'):
      saved, now = saved_meta.get(key), meta.get(key)
      if saved is not None and saved != now:
        diff = ({k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
                if isinstance(now, dict) else (saved, now))
        raise ConfigError(
            f'{workdir!r} holds checkpoints of a different {"model" if key == "model" else "set of members"} '
            f'(saved vs now: {diff}); use a new --workdir, or the config that wrote those checkpoints.')
    resume.check_resume(saved_meta, meta, config, workdir)

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
  return state


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
  checks.check_memory(trainer, config, shapes, n_params)
  state = trainer.init_state()
  steps_per_call = config.steps_per_call or xla.DEFAULT_STEPS_PER_CALL.get(jax.default_backend(), 1)
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
  logging.info('Checkpoints, metrics, pictures and results go to %s.', ', '.join(
      m.workdir for m in member_list))
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
  meta['run'] = resume.run_record(config)
  meta['num_epochs'] = config.num_epochs

  state = _restore(ckpts, state, meta, config, workdir, steps_per_epoch)

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
