"""A study's plan: the base config, the study settings and every member's full config
(one per seed), all checked before anything is read, trained or written."""

import copy
import json

import ml_collections

from flax_cae.runtime import cli
from flax_cae.runtime import errors
from flax_cae import models
from flax_cae.training import trainer as trainer_lib
from flax_cae.training import resume
from flax_cae.training import checks
from flax_cae.data import sources
from flax_cae.runtime.errors import ConfigError
from flax_cae.studies import evals
from flax_cae.studies import members as members_lib


TOGETHER = ('auto', 'yes', 'no')


# 'auto': members that differ only in numbers train together (vmapped) where that was
# measured faster. On XLA's CPU backend it was slower (benchmarks/members.py: the member
# axis of a convolution becomes a grouped convolution), so CPU trains them one by one.
TOGETHER_AUTO = {'cpu': False, 'gpu': True, 'tpu': True}


# Study fields that became evaluators' settings (study.evals), and where each went.
MOVED = {'classifier': 'study.evals.classifier.train',
         'classifier_workdir': 'study.evals.classifier.workdir',
         'visualize': 'study.evals.visualize', 'rate_distortion': 'study.evals.rate_distortion',
         'rd_steps': 'study.evals.rate_distortion.steps',
         'rd_qualities': 'study.evals.rate_distortion.qualities'}

# --config.study.data=NAME: the data fields of S1's configs for that data set.
STUDY_DATA = {
    'mnist': dict(name='mnist', validation_size=5000, test_size=0),
    'cifar10': dict(name='cifar10', validation_size=5000, test_size=0),
    'cinic10': dict(name='cinic10', validation_size=0, test_size=0),
}


def is_study(config) -> bool:
  return 'study' in config


def _check_study(study, base):
  if not len(study.members):
    raise ConfigError('study.members is empty; a study needs at least one member.')
  for key in ('num_seeds', 'tune_epochs', 'num_grid_images'):
    if not isinstance(study[key], int) or study[key] <= 0:
      raise ConfigError(f'study.{key} must be a positive integer, got {study[key]!r}; '
                        f'set --config.study.{key}=N with N > 0.')
  if study.train_together not in TOGETHER:
    raise errors.unknown_name('study.train_together', study.train_together, TOGETHER)
  if study.data and study.data not in STUDY_DATA:
    raise errors.unknown_name('study.data', study.data, STUDY_DATA)
  if study.x_axis and study.x_axis not in resume.flat_config(base):
    raise ConfigError(f'study.x_axis={study.x_axis!r} is not a config field; give one the '
                      'members vary, e.g. --config.study.x_axis=model.rate.')
  if not isinstance(study.tune_learning_rate, bool):
    raise ConfigError(f'study.tune_learning_rate must be true or false, got '
                      f'{study.tune_learning_rate!r}; set --config.study.tune_learning_rate=true '
                      'or false.')
  for old, new in MOVED.items():
    if old in study:
      raise ConfigError(f'study.{old} is now {new}: name what the study evaluates in '
                        "study.evals (e.g. evals=dict(pca={}, visualize={})).")
  if not isinstance(study.get('evals'), ml_collections.ConfigDict):
    raise ConfigError('study.evals must name what runs after the members, each with its '
                      "settings, e.g. evals=dict(pca={}, nl_means={}); {} for nothing.")
  only = [n.strip() for n in str(study.only).split(',')]
  if not any(only):
    raise ConfigError('study.only is empty; name the members to train, e.g. '
                      f'--config.study.only={",".join(list(study.members.keys())[:2])}, or leave '
                      f'the flag out to train them all ({", ".join(study.members.keys())}).')
  for name in only:
    if name not in study.members:
      raise errors.unknown_name('study member', name, list(study.members.keys()))
  twice = sorted({n for n in only if only.count(n) > 1})
  if twice:
    raise ConfigError(f'study.only names {", ".join(twice)} more than once; name each member '
                      f'once, e.g. --config.study.only={",".join(dict.fromkeys(only))}.')
  if study.tune_learning_rate:
    factors = tuple(study.lr_factors)
    if not factors or any(not isinstance(f, (int, float)) or not f > 0 for f in factors):
      raise ConfigError(f'study.lr_factors must be positive numbers, got {factors!r}; e.g. '
                        '--config.study.lr_factors="(0.3, 1.0, 3.0)".')
    if study.tune_epochs > base.num_epochs:
      raise ConfigError(f'study.tune_epochs ({study.tune_epochs}) is longer than training '
                        f'({base.num_epochs} epochs); lower it.')
  return only


def _member_error(error: ConfigError, name: str, overrides) -> ConfigError:
  """A member's bad value, named as the member's field: the flags in the message that the
  member overrides become --config.study.members.NAME.FIELD."""
  text = str(error)
  keys = sorted(resume.flat_config(overrides.to_dict() if hasattr(overrides, 'to_dict')
                                  else dict(overrides)), key=len, reverse=True)
  named = False
  for key in keys:
    if key in text:
      text = text.replace(f'--config.{key}=', f'--config.study.members.{name}.{key}=')
      named = True
  return ConfigError(f'study member {name!r}: {text}' if named else text)


def _check_together(study, members):
  """train_together=yes where no two runs of the study can share one compiled program (no two
  members or seeds differ only in trainer_lib.MEMBER_NUMBERS, no learning rates to tune) is refused;
  where some can, the others train on their own and train_jobs says so."""
  if study.train_together != 'yes':
    return
  if study.tune_learning_rate and len(study.lr_factors) > 1:
    return  # each member's tuning runs differ only in the rate
  configs = [(name, c) for name, cs in members for c in cs]
  if any(len(g) > 1 for g in members_lib.groups([(n, '', c) for n, c in configs])):
    return
  if len(configs) < 2:
    raise ConfigError('study.train_together=yes, but this study trains a single run; set '
                      '--config.study.train_together=auto or no.')
  (first, a), (second, b) = configs[0], configs[1]
  a, b = members_lib.shared_fields(a), members_lib.shared_fields(b)
  diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
  raise ConfigError(
      f'study.train_together=yes, but no two members here can share one compiled program (e.g. '
      f'{first!r} and {second!r} differ in {diff}; only {", ".join(trainer_lib.MEMBER_NUMBERS)} may '
      'differ); set --config.study.train_together=auto or no, or train seeds '
      '(study.num_seeds) or learning rates (study.tune_learning_rate) together.')


def _check_x_axis(study, members):
  if not study.x_axis:
    return
  values = {name: resume.flat_config(configs[0]).get(study.x_axis) for name, configs in members}
  if len({json.dumps(v) for v in values.values()}) < 2:
    raise ConfigError(
        f'study.x_axis={study.x_axis} is the same for every member trained here '
        f'({next(iter(values.values()))!r}), so there is no curve to draw; give a field the '
        'members vary (e.g. model.rate in configs/studies/s2_compression_rate.py), or '
        '--config.study.x_axis= for none.')


def plan(config):
  """(base config, study settings, [(member name, [config per seed])]): every member's
  full config, checked before anything is read or trained."""
  config = copy.deepcopy(config)
  study = config.study
  with config.unlocked():
    del config['study']
  base = config
  names = _check_study(study, base)
  if not base.get('eval_batch_size'):  # 0 = batch_size, as for a single run
    base.eval_batch_size = base.batch_size
  if study.data:
    base.data.update(STUDY_DATA[study.data])
  evals.check(study, base)
  members = []
  for name in names:
    overrides = study.members[name]
    if set(overrides.get('data', {})) - {'noise'}:
      raise ConfigError(f'study member {name!r} overrides data fields; every member of a '
                        'study trains and is scored on the same images (only data.noise, '
                        'what the inputs are corrupted with, may differ).')
    c = copy.deepcopy(base)
    cli.update_config(c, overrides, f'study.members.{name}')
    try:
      checks.validate(c, 1)
      # The model's own checks (widths per stage, skips, code grid) need only the images' shape.
      models.build_model(c.model, sources.image_shape(
          c.data.name, image_size=c.data.get('image_size'), channels=c.data.get('channels')))
    except ConfigError as e:
      raise _member_error(e, name, overrides) from None
    members.append((name, [_with_seed(c, c.seed + s) for s in range(study.num_seeds)]))
  _check_together(study, members)
  _check_x_axis(study, members)
  return base, study, members


def _with_seed(config, seed):
  c = copy.deepcopy(config)
  c.seed = seed
  return c
