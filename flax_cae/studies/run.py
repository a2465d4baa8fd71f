"""Studies: one command trains every member of a comparison and writes the paper's table
and figures, with PCA at the same number of floats beside the learned models.

A study is a config with a `study` section (configs/studies/): the base config is what
every member shares, `study.members` maps a member's name to the fields it overrides
(a partial config tree). `python launch.py --config=configs/studies/NAME.py --workdir=DIR`
writes in DIR:

  members/<member>[_seed<s>]/   one ordinary workdir per member and seed (checkpoints,
                                metrics.jsonl, results.json, reconstructions)
  tuning/<member>/lr_<rate>/    the short runs that picked a member's learning rate
  groups/<group>/               shared checkpoints of members trained together
  study.md, study.csv           one row per member (mean +- std over seeds) and the PCA rows
  tuning.md, tuning.csv         validation PSNR of every tried learning rate
  psnr_ssim.png                 test PSNR and SSIM per member (bars; PCA as reference)
  validation_psnr.png           validation PSNR curves of all members on one plot
  reconstructions.png           the same test images: originals, then a row per member, PCA
  classifier/                   with study.classifier: the classifier trained on the originals
  loss_vs_time.png              training loss against training seconds, every member (S3)
  rate_distortion.{md,csv,png}  with study.rate_distortion: PSNR/SSIM against bits per pixel
                                of every code (decoded from real bitstreams), PCA, JPEG, WebP
  members/*/code_models/, code_models/pca<k>/
                                the quantizer steps and probability tables of each point
                                (flax_cae.bitstream.CodeModel.load), beside the checkpoints
  members/*/visualize/          with study.visualize: t-SNE maps, interpolations, snapshots (S4)
  <x>_curves.png, codes.png     with study.x_axis (S2: model.rate): accuracy ratio and PSNR
                                against x, models and PCA; per member original/code/output

With a classifier (trained here from `study.classifier`'s overrides of the base config, or
a finished one given as `study.classifier_workdir`), every row also has the classifier's
accuracy on the test images, on their reconstructions and the ratio (S2), PCA rows too.

Run again, the study skips finished members (those with results.json) and resumes a
member in progress from its checkpoint, exactly as a single run resumes.
"""

import copy
import csv
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from flax_cae.evaluation import pca as baselines
from flax_cae.evaluation import nl_means as classical
from flax_cae.runtime import errors
from flax_cae.runtime import machine
from flax_cae import models
from flax_cae.training import loop as train
from flax_cae.training import trainer as trainer_lib
from flax_cae.training import resume
from flax_cae.training import checks
from flax_cae.training import run as run_lib
from flax_cae.runtime import writers
from flax_cae.codec import rate_distortion as rd
from flax_cae.data import noise as noise_lib
from flax_cae.evaluation import trained as evaluate_lib
from flax_cae.evaluation import pictures as visualize_lib
from flax_cae.runtime import workdir as workdir_lib
from flax_cae.data import pipeline, sources
from flax_cae.runtime.errors import ConfigError

TOGETHER = ('auto', 'yes', 'no')
# 'auto': members that differ only in numbers train together (vmapped) where that was
# measured faster. On XLA's CPU backend it was slower (benchmarks/members.py: the member
# axis of a convolution becomes a grouped convolution), so CPU trains them one by one.
TOGETHER_AUTO = {'cpu': False, 'gpu': True, 'tpu': True}

# --config.study.data=NAME: the data fields of S1's configs for that data set.
STUDY_DATA = {
    'mnist': dict(name='mnist', validation_size=5000, test_size=0),
    'cifar10': dict(name='cifar10', validation_size=5000, test_size=0),
    'cinic10': dict(name='cinic10', validation_size=0, test_size=0),
}

CSV_COLUMNS = ('member', 'x', 'seeds', 'test_psnr', 'test_psnr_std', 'test_ssim', 'test_ssim_std',
               'test_mse', 'test_mse_std', 'test_snr', 'test_snr_std', 'noise',
               'test_noisy_psnr', 'test_noisy_snr', 'test_kl', 'final_validation_loss', 'bottleneck_floats',
               'compression_ratio', 'parameters', 'train_seconds', 'images_per_second',
               'learning_rate', 'learning_rate_tuned', 'accuracy_original',
               'accuracy_reconstruction', 'accuracy_ratio', 'diverged', 'note')


# Models whose code size is model.latent_dim (rate_cae's is set by its rate).
LATENT_MODELS = ('cae', 'base_cae', 'improved_cae', 'improved_cae_res_interp',
                 'improved_cae_res_conv')


def is_study(config) -> bool:
  return 'study' in config


def _update(config, overrides, where: str):
  """Applies a partial config tree; an unknown field is one sentence naming it."""
  for key, value in overrides.items():
    if key not in config:
      raise ConfigError(f'{where}: {key!r} is not a config field; check the spelling '
                        f'(fields here: {", ".join(sorted(config.keys()))}).')
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      _update(config[key], value, f'{where}.{key}')
    else:
      config[key] = value


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
  for key in ('tune_learning_rate', 'visualize', 'rate_distortion'):
    if not isinstance(study.get(key, False), bool):
      raise ConfigError(f'study.{key} must be true or false, got {study[key]!r}; set '
                        f'--config.study.{key}=true or false.')
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
  if study.get('rate_distortion', False):
    steps, qualities = tuple(study.rd_steps), tuple(study.rd_qualities)
    if not steps or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not f > 0
                        for f in steps):
      raise ConfigError(f'study.rd_steps must be positive numbers (quantizer steps in standard '
                        f'deviations of each code channel), got {steps!r}; e.g. '
                        '--config.study.rd_steps="(1.0, 0.5, 0.25)".')
    if any(isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 100 for q in qualities):
      raise ConfigError(f'study.rd_qualities must be JPEG/WebP qualities, integers in 1..100, '
                        f'got {qualities!r}; e.g. --config.study.rd_qualities="(10, 50, 90)".')
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
  if any(len(g) > 1 for g in _groups([(n, '', c) for n, c in configs])):
    return
  if len(configs) < 2:
    raise ConfigError('study.train_together=yes, but this study trains a single run; set '
                      '--config.study.train_together=auto or no.')
  (first, a), (second, b) = configs[0], configs[1]
  a, b = _shared_fields(a), _shared_fields(b)
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
  members = []
  for name in names:
    overrides = study.members[name]
    if set(overrides.get('data', {})) - {'noise'}:
      raise ConfigError(f'study member {name!r} overrides data fields; every member of a '
                        'study trains and is scored on the same images (only data.noise, '
                        'what the inputs are corrupted with, may differ).')
    c = copy.deepcopy(base)
    _update(c, overrides, f'study.members.{name}')
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
  if len(study.classifier) and not study.classifier_workdir:
    classifier_config(base, study)  # its names and values, before anything is trained
  return base, study, members


def _with_seed(config, seed):
  c = copy.deepcopy(config)
  c.seed = seed
  return c


def check_not_changed(jobs):
  """A member workdir already holding a run of other settings is refused (before anything
  is trained), naming the keys: a study never mixes members of two settings."""
  for key, member_dir, config in jobs:
    path = os.path.join(member_dir, 'config.json')
    if not os.path.isfile(path):
      continue
    with open(path) as f:
      saved = resume.flat_config(json.load(f))
    # Unlike a single run, a finished member is not trained further: its epochs must match too.
    diff = resume.config_diff(saved, resume.flat_config(config),
                             ignore=set(resume.MAY_CHANGE) - {'num_epochs'})
    if diff:
      raise ConfigError(
          f'study member {key!r} in {member_dir!r} was trained with other settings (saved vs '
          f'now: {diff}); use a new --workdir, or the settings that study was run with.')


def _done(workdir) -> dict | None:
  path = os.path.join(workdir, 'results.json')
  if os.path.isfile(path):
    with open(path) as f:
      return json.load(f)
  return None


def _shared_fields(config) -> dict:
  """The flat config fields that members trained together must share (all but
  trainer_lib.MEMBER_NUMBERS)."""
  return {k: v for k, v in resume.flat_config(config).items() if k not in trainer_lib.MEMBER_NUMBERS}


def _differ_in_numbers_only(a, b) -> bool:
  """Whether two member configs may train together: equal but for trainer_lib.MEMBER_NUMBERS."""
  return _shared_fields(a) == _shared_fields(b)


def _groups(jobs):
  """Jobs [(key, workdir, config)] -> groups of jobs that may train together, in order."""
  groups = []
  for job in jobs:
    for g in groups:
      if _differ_in_numbers_only(g[0][2], job[2]):
        g.append(job)
        break
    else:
      groups.append([job])
  return groups


def train_jobs(jobs, workdir: str, splits, together: bool, group_name: str) -> dict:
  """Trains jobs [(key, member workdir, config)] that are not finished yet (one by one,
  or together in groups); returns {key: results}. A member that diverges is recorded as
  such (its results.json says at which step) and the others go on."""
  check_not_changed(jobs)
  results = {key: r for key, d, _ in jobs if (r := _done(d)) is not None}
  todo = [job for job in jobs if job[0] not in results]
  groups = _groups(todo) if together else [[job] for job in todo]
  for group in groups:
    if len(group) == 1:
      key, member_dir, c = group[0]
      logging.info('Study: training %s in %s%s.', key, member_dir,
                   ' on its own (it differs from the others in more than seed, learning rate '
                   'and loss weights)' if together and len(todo) > 1 else '')
      try:
        out = train.train_and_evaluate(c, member_dir, splits=splits)
      except errors.DivergedError as e:
        logging.warning('Study: %s diverged (%s).', key, e)
        out = {'diverged_at_step': -1, 'error': str(e)}
        writers.write_results(member_dir, out)
      outs = [out]
    else:
      # Named by its members, so a resumed study finds the same group's checkpoints.
      gdir = os.path.join(workdir, 'groups', group_name + '+'.join(k for k, _, _ in group))
      logging.info('Study: training %s together in %s.', ', '.join(k for k, _, _ in group), gdir)
      outs = train.train_members(group[0][2], gdir, group, splits=splits)
    if isinstance(outs, dict) and outs.get('preempted'):
      return {'preempted': True}
    for (key, _, _), out in zip(group, outs):
      if out.get('preempted'):
        return {'preempted': True}
      results[key] = out
  return results


def _score(result) -> float:
  """Validation PSNR of a tuning run; a diverged run ranks last."""
  if result.get('diverged_at_step') is not None or 'validation_psnr' not in result:
    return -math.inf
  return result['validation_psnr']


def tune_learning_rates(base, study, members, workdir, splits, together) -> dict:
  """Per member: short runs at (its learning rate x each of study.lr_factors), the rate
  with the best validation PSNR kept. Returns {member: (rate, [(rate, psnr)])}."""
  chosen = {}
  for name, configs in members:
    center = configs[0].optimizer.learning_rate
    jobs = []
    for f in study.lr_factors:
      c = copy.deepcopy(configs[0])
      c.optimizer.learning_rate = float(f'{center * f:.3g}')
      c.num_epochs = study.tune_epochs
      jobs.append((f'{c.optimizer.learning_rate:g}',
                   os.path.join(workdir, 'tuning', name, f'lr_{c.optimizer.learning_rate:g}'), c))
    results = train_jobs(jobs, workdir, splits, together, f'tune_{name}_lr_')
    if results.get('preempted'):
      return {'preempted': True}
    tried = [(c.optimizer.learning_rate, _score(results[key])) for key, _, c in jobs]
    best = max(tried, key=lambda t: t[1])
    if best[1] == -math.inf:
      raise errors.DivergedError(
          f'every learning rate tried for study member {name!r} diverged ({[r for r, _ in tried]}); '
          'give it a smaller center rate in study.members or other study.lr_factors.')
    chosen[name] = (best[0], tried)
    logging.info('Study: %s learning rate %g (validation PSNR %.2f dB).', name, best[0], best[1])
  return chosen


def classifier_config(base, study):
  """The base config with study.classifier's overrides (e.g. model.name=lenet5)."""
  c = copy.deepcopy(base)
  _update(c, study.classifier, 'study.classifier')
  if c.model.name not in models.CLASSIFIERS:
    raise ConfigError(f'study.classifier trains a {c.model.name}, which is not a classifier; '
                      f'set its model.name to one of {", ".join(models.CLASSIFIERS)}.')
  checks.validate(c, 1)
  return c


def get_classifier(base, study, workdir, splits):
  """The study's classifier trained from study.classifier's overrides on the original
  training images in WORKDIR/classifier (once; a rerun reuses it). None when the study has
  none (or gives a finished one as study.classifier_workdir: run_study loads that);
  {'preempted': True} when SIGTERM stopped its training."""
  if not len(study.classifier):
    return None
  c = classifier_config(base, study)
  cdir = os.path.join(workdir, 'classifier')
  out = train_jobs([('classifier', cdir, c)], workdir, splits, False, '')
  if out.get('preempted'):
    return out
  return evaluate_lib.load_trained(cdir)


def classifier_scores(classifier, split, rows):
  """Adds the classifier's accuracies (S2) to each member row, mean over its seeds."""
  for row in rows:
    runs = [evaluate_lib.score_with_classifier(classifier, split, ae.reconstruct)
            for d in row['workdirs'] if (ae := _loaded(d)) is not None]
    for key in ('accuracy_original', 'accuracy_reconstruction', 'accuracy_ratio'):
      row[key] = _mean_std([r[key] for r in runs])[0]


def _loaded(member_dir):
  result = _done(member_dir)
  if result is None or result.get('diverged_at_step') is not None:
    return None
  return evaluate_lib.load_trained(member_dir)


def run_study(config, workdir: str) -> dict:
  """Trains every member of the study `config` in `workdir` and writes its tables and
  figures (see the module docstring). Returns {'rows': [...], 'pca': [...]}."""
  base, study, members = plan(config)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  workdir_lib.check_kind(workdir, 'study', study.get('name', ''))
  together = {'yes': True, 'no': False}.get(study.train_together,
                                            TOGETHER_AUTO.get(jax.default_backend(), False))
  with train.random_streams():
    mesh = pipeline.make_mesh()
    if not base.get('eval_batch_size'):
      base.eval_batch_size = base.batch_size
    checks.validate(base, mesh.devices.size)
    splits = run_lib.load_data(base, mesh)  # read once, shared by every member
  given = None  # a finished classifier, checked before the study's workdir is made
  if study.classifier_workdir:
    given = evaluate_lib.load_trained(study.classifier_workdir,
                                      '--config.study.classifier_workdir')
    evaluate_lib.check_compatible(given, splits['train'].image_shape, 'this study\'s data',
                                  '--config.study.classifier_workdir')
  workdir, created = workdir_lib.make(workdir)
  try:
    if writers.is_writer():
      workdir_lib.mark_study(workdir, study.get('name', ''))
    return _train_and_report(base, study, members, workdir, splits, together, given)
  except errors.UserError:
    written = [f for d, _, files in os.walk(workdir) for f in files
               if os.path.join(d, f) != os.path.join(workdir, workdir_lib.STUDY_FILE)]
    if created and not written:  # refused before anything was trained: leave no workdir
      shutil.rmtree(workdir)
    raise


def _train_and_report(base, study, members, workdir, splits, together, given) -> dict:
  """run_study's work once everything is checked: train, score, write."""
  classifier = given or get_classifier(base, study, workdir, splits)
  if isinstance(classifier, dict):
    logging.warning('Study stopped by SIGTERM; run the same command to resume it.')
    return {'preempted': True}

  chosen = {}
  if study.tune_learning_rate:
    chosen = tune_learning_rates(base, study, members, workdir, splits, together)
    if chosen.get('preempted'):
      return {'preempted': True}
    for name, configs in members:
      for c in configs:
        c.optimizer.learning_rate = chosen[name][0]
    write_tuning(workdir, chosen)

  jobs = [(_member_key(name, s, study.num_seeds),
           os.path.join(workdir, 'members', _member_key(name, s, study.num_seeds)), c)
          for name, configs in members for s, c in enumerate(configs)]
  results = train_jobs(jobs, workdir, splits, together, '')
  if results.get('preempted'):
    logging.warning('Study stopped by SIGTERM; run the same command to resume it.')
    return {'preempted': True}

  rows = [_row(name, [(results[_member_key(name, s, study.num_seeds)],
                       os.path.join(workdir, 'members', _member_key(name, s, study.num_seeds)))
                      for s in range(study.num_seeds)], chosen.get(name))
          for name, _ in members]
  shown = splits['test'] if splits['test'].n else splits['validation']
  noises = {}  # noise settings of the denoising members, in order
  for (name, configs), row in zip(members, rows):
    noise = configs[0].data.get('noise') or {}
    if noise_lib.is_on(noise):
      row['noise'] = classical.describe(noise).split('(')[1].rstrip(')')
      noises.setdefault(noise_lib.params(noise), noise)
  if classifier is not None:
    classifier_scores(classifier, shown, rows)
  for name, configs in members:
    if study.x_axis:
      next(r for r in rows if r['member'] == name)['x'] = resume.flat_config(configs[0])[study.x_axis]
  input_floats = int(np.prod(splits['train'].image_shape))
  pca_rows, pca_images, pca = pca_baseline(splits, rows, input_floats, study.num_grid_images,
                                      classifier)
  for noise in noises.values():  # the classical denoiser on the same noisy test images
    logging.info('Study: %s on %d test images.', classical.describe(noise), shown.n)
    scored = classical.score_nl_means(shown, noise)
    pca_rows.append({'member': classical.describe(noise), 'seeds': 1,
                     'noise': classical.describe(noise).split('(')[1].rstrip(')'),
                     **{f'test_{k}': v for k, v in scored.items()},
                     'note': 'classical denoiser (scikit-image), no training'})
  if writers.is_writer():
    write_tables(workdir, study, rows, pca_rows, base, splits, classifier)
    write_figures(workdir, rows, pca_rows, pca_images, study.num_grid_images)
    if study.x_axis:
      write_x_figures(workdir, study.x_axis, rows, pca_rows, shown, study.num_grid_images,
                      classifier is not None)
  if study.get('rate_distortion', False) and writers.is_writer():
    rate_distortion_study(workdir, study, rows, splits, pca)
  if study.visualize and writers.is_writer():
    for r in rows:
      for d in r['workdirs']:
        if _loaded(d) is not None:
          logging.info('Study: visualizing %s.', d)
          visualize_lib.visualize(d)
  logging.info('Study written to %s (study.md, study.csv, *.png).', workdir)
  return {'rows': rows, 'pca': pca_rows}


def rate_distortion_study(workdir, study, rows, splits, pca):
  """flax_cae.rate_distortion for every member (first seed), PCA at each member's floats
  (`pca`: pca_baseline's fit, there whenever a member compresses), JPEG and WebP, on the
  shown split: rate_distortion.md/.csv/.png."""
  shown = splits['test'] if splits['test'].n else splits['validation']
  train_u8 = rd.split_images(splits['train'], rd.FIT_IMAGES)
  test_u8 = rd.split_images(shown)
  points, sizes = [], set()
  for r in rows:
    trained = _loaded(r['workdirs'][0])
    if trained is None or trained.task == 'classification':
      continue
    save_dir = os.path.join(r['workdirs'][0], 'code_models')
    if trained.task == 'rate_distortion':
      points.append(rd.codec_points(trained.config.model.name, trained, train_u8, test_u8,
                                    save_dir))
      continue
    parts = list(models.bottleneck(trained.model)['parts'])
    if parts != ['latent'] or not r['compression_ratio'] or r['compression_ratio'] <= 1:
      logging.info('Study: %s is left out of the rate-distortion curves (its code is %s).',
                   r['member'], 'not a compression' if parts == ['latent'] else '+'.join(parts))
      continue
    points += rd.code_points(
        r['member'], lambda x, t=trained: t.encode(t.variables, x)['latent'],
        lambda z, t=trained: t.decode(t.variables, {'latent': jnp.asarray(z)}),
        train_u8, test_u8, study.rd_steps, note=f'{r["bottleneck_floats"]} floats, quantized',
        save_dir=save_dir)
    sizes.add(r['bottleneck_floats'])
  if sizes:  # PCA with as many floats as each autoencoder's code, coded the same way
    for k in sorted(sizes):
      points += rd.code_points(f'PCA ({k} floats)', lambda x, k=k: pca.encode(x, k),
                               lambda z, k=k: pca.decode(z), train_u8, test_u8, study.rd_steps,
                               note='linear code, quantized like the models\' codes',
                               save_dir=os.path.join(workdir, 'code_models', f'pca{k}'))
  points += rd.classical_points(test_u8, study.rd_qualities)
  rd.write(workdir, points, splits['train'].image_shape, len(test_u8), machine.device())


def _member_key(name, seed_index, num_seeds):
  return name if num_seeds == 1 else f'{name}_seed{seed_index}'


def _final_validation_loss(member_dir):
  path = os.path.join(member_dir, 'metrics.jsonl')
  if not os.path.isfile(path):
    return math.nan
  with open(path) as f:
    vals = [r for r in map(json.loads, f) if r.get('split') == 'validation']
  return vals[-1]['loss'] if vals else math.nan


def _mean_std(values):
  values = [v for v in values if v is not None and math.isfinite(v)]
  if not values:
    return math.nan, math.nan
  return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)


def _row(name, runs, tuned):
  """One table row from a member's runs [(results, workdir)] over seeds."""
  ok = [(r, d) for r, d in runs if r.get('diverged_at_step') is None]
  row = {'member': name, 'seeds': len(runs), 'diverged': len(runs) - len(ok),
         'workdirs': [d for _, d in runs]}
  for key in ('test_psnr', 'test_ssim', 'test_mse', 'test_snr', 'test_noisy_psnr',
              'test_noisy_snr', 'test_kl'):
    row[key], row[f'{key}_std'] = _mean_std([r.get(key) for r, _ in ok])
  row['final_validation_loss'] = _mean_std([_final_validation_loss(d) for _, d in ok])[0]
  row['train_seconds'] = _mean_std([r.get('train_seconds') for r, _ in ok])[0]
  row['images_per_second'] = _mean_std([r.get('images_per_second') for r, _ in ok])[0]
  first = ok[0][0] if ok else {}
  for key in ('bottleneck_floats', 'compression_ratio', 'parameters', 'learning_rate',
              'input_floats', 'image_shape', 'model'):
    row[key] = first.get(key)
  row['learning_rate_tuned'] = tuned is not None
  row['note'] = ('not a compression' if row['compression_ratio'] and row['compression_ratio'] <= 1
                 else '')
  if row['diverged']:
    row['note'] = (row['note'] + '; ' if row['note'] else '') + f'{row["diverged"]} diverged'
  return row


def pca_baseline(splits, rows, input_floats, n_images, classifier=None):
  """PCA fitted on the training split, scored on the test split with as many floats as
  each member's bottleneck (only where that is smaller than the image: else the identity
  is a perfect 'code'), and by the classifier if there is one. Returns (rows, {floats:
  reconstructions of the first test images}, the fitted baselines.PCA or None)."""
  sizes = sorted({r['bottleneck_floats'] for r in rows
                  if r['bottleneck_floats'] and r['bottleneck_floats'] < input_floats})
  if not sizes:
    return [], {}, None
  logging.info('Study: fitting PCA on %d training images for %s floats.', splits['train'].n, sizes)
  pca = baselines.PCA(splits['train'])
  first = next(baselines._chunks(splits['test'], max(n_images, 1)))[0][:n_images]  # pylint: disable=protected-access
  out, images = [], {}
  for k in sizes:
    s = pca.score(splits['test'], k)
    out.append({'member': f'PCA ({k} floats)', 'seeds': 1, 'test_psnr': s['psnr'],
                'test_ssim': s['ssim'], 'test_mse': s['mse'], 'test_snr': s['snr'],
                'bottleneck_floats': k,
                'compression_ratio': input_floats / k, 'parameters': k * (input_floats + 1),
                'x': next((r.get('x') for r in rows if r['bottleneck_floats'] == k), None),
                'note': 'linear code fitted on the training split'})
    if classifier is not None:
      scored = evaluate_lib.score_with_classifier(
          classifier, splits['test'] if splits['test'].n else splits['validation'],
          lambda images, k=k: pca.reconstruct(images, k))
      out[-1].update({key: scored[key] for key in ('accuracy_original',
                                                  'accuracy_reconstruction', 'accuracy_ratio')})
    images[k] = np.asarray(pca.reconstruct(first, k))
  return out, images, pca


def _fmt(v, digits=2):
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return '–'
  if isinstance(v, bool):
    return 'yes' if v else ''
  if isinstance(v, float):
    return f'{v:.{digits}f}'
  return str(v)


def _fmt_int(v):
  return '–' if v is None else f'{int(v):,}'


def _pm(row, key, digits):
  mean, std = row.get(key), row.get(f'{key}_std')
  if row.get('seeds', 1) > 1 and std is not None and not math.isnan(std):
    return f'{_fmt(mean, digits)} ± {_fmt(std, digits)}'
  return _fmt(mean, digits)


def write_tables(workdir, study, rows, pca_rows, base, splits, classifier=None):
  with open(os.path.join(workdir, 'study.csv'), 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction='ignore')
    w.writeheader()
    for r in rows + pca_rows:
      w.writerow({k: r.get(k, '') for k in CSV_COLUMNS})
  x_name = study.x_axis.split('.')[-1] if study.x_axis else ''
  noisy = any(r.get('noise') for r in rows)
  vae = any(r.get('test_kl') is not None and math.isfinite(r['test_kl']) for r in rows)
  header = ('| member |' + (f' {x_name} |' if x_name else '')
            + (' noise | noisy input PSNR (dB) | noisy input SNR (dB) |' if noisy else '')
            + ' test PSNR (dB) | test SNR (dB) | test SSIM | test MSE |'
            + (' KL |' if vae else '') + ' final val. loss | bottleneck floats '
            '| compression |' + (' classifier accuracy: originals | reconstructions | ratio |'
                                 if classifier else '')
            + ' parameters | train time (s) | images/s | learning rate | note |')
  lines = [f'# Study: {study.name}', '',
           f'Data: {base.data.name}, {"x".join(map(str, splits["train"].image_shape))}: '
           f'{splits["train"].n:,} train / {splits["validation"].n:,} validation / '
           f'{splits["test"].n:,} test images. Shared by every member '
           f'unless it overrides them: model {base.model.name}'
           f'{f" (latent {base.model.latent_dim})" if base.model.name in LATENT_MODELS else ""}, '
           f'loss {base.loss.name}, optimizer {base.optimizer.name} '
           f'(learning rate {base.optimizer.learning_rate:g}), batch {base.batch_size}, '
           f'{base.num_epochs} epochs. {study.num_seeds} seed(s) per member (mean ± sample std '
           f'over seeds). Device: {machine.device()}.', '',
           header, '|' + '---|' * header.count(' |')]
  for r in rows + pca_rows:
    lr = r.get('learning_rate')
    lr_text = '' if lr is None else f'{lr:g}' + (' (tuned)' if r.get('learning_rate_tuned') else '')
    ratio = r.get('compression_ratio')
    lines.append('| ' + ' | '.join([
        r['member'], *([_fmt(r.get('x'))] if x_name else []),
        *([r.get('noise') or 'none', _fmt(r.get('test_noisy_psnr')), _fmt(r.get('test_noisy_snr'))]
          if noisy else []),
        _pm(r, 'test_psnr', 2), _pm(r, 'test_snr', 2), _pm(r, 'test_ssim', 4),
        _pm(r, 'test_mse', 5), *([_fmt(r.get('test_kl'), 3)] if vae else []),
        _fmt(r.get('final_validation_loss'), 5), _fmt(r.get('bottleneck_floats')),
        '–' if not ratio else f'{ratio:.2f}x',
        *([_fmt(r.get(k), 4) for k in ('accuracy_original', 'accuracy_reconstruction',
                                       'accuracy_ratio')] if classifier else []),
        _fmt_int(r.get('parameters')),
        _fmt(r.get('train_seconds'), 0), _fmt(r.get('images_per_second'), 0), lr_text,
        r.get('note', '')]) + ' |')
  lines += ['', 'PSNR: mean of per-image PSNR (pixel range 1.0); SNR: mean of per-image '
            '10 log10(signal power / error power); SSIM: dm-pix (11-tap Gaussian, '
            'sigma 1.5, valid filtering), mean of per-image values; both on the test split with '
            f"each member's best checkpoint by validation {run_lib.selection_metric(base)}. PCA rows: the optimal linear code "
            'with as many floats as the bottleneck above it, fitted on the training split, '
            'scored on the same test images. "not a compression": the decoder receives at least '
            'as many floats as the image holds.', '']
  if noisy:
    lines[-1:-1] = [
        '', 'Denoising rows: the input is corrupted as the noise column says (the same noisy '
        'test images for every row: evaluation noise is a function of the image\'s index), the '
        'target is the clean image; "noisy input" scores the corrupted input itself. NL-means: '
        'scikit-image denoise_nl_means (patch 5, distance 6, fast mode, h = 0.8 sigma; sigma '
        'from the config for Gaussian noise, estimate_sigma otherwise) on the same noisy images.']
  if classifier is not None:
    c = classifier.results
    lines[-1:-1] = [
        '', f'Classifier: {c["model"]} ({classifier.workdir}), trained on the original training '
        f'images ({c.get("test_accuracy", c.get("validation_accuracy", math.nan)):.4f} '
        f'{c.get("eval_split", "test")} accuracy in its own run). Accuracy: the share of test '
        'images it labels correctly, on the originals and on each row\'s reconstructions (as '
        '8-bit images); ratio = reconstructions / originals (S2\'s "performance ratio").']
  with open(os.path.join(workdir, 'study.md'), 'w') as f:
    f.write('\n'.join(lines))


def write_tuning(workdir, chosen):
  if not writers.is_writer():
    return
  with open(os.path.join(workdir, 'tuning.csv'), 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['member', 'learning_rate', 'validation_psnr', 'chosen'])
    for name, (rate, tried) in chosen.items():
      for r, psnr in tried:
        w.writerow([name, r, psnr, r == rate])
  lines = ['| member | learning rates tried (validation PSNR, dB) | chosen |', '|---|---|---|']
  for name, (rate, tried) in chosen.items():
    cells = ', '.join(f'{r:g}: ' + ('diverged' if psnr == -math.inf else f'{psnr:.2f}')
                      for r, psnr in tried)
    lines.append(f'| {name} | {cells} | {rate:g} |')
  with open(os.path.join(workdir, 'tuning.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


def write_figures(workdir, rows, pca_rows, pca_images, n_images):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  names = [r['member'] for r in rows]
  fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.3 * len(rows) + 4), 4.5))
  for ax, key, label in ((axes[0], 'test_psnr', 'test PSNR (dB)'), (axes[1], 'test_ssim', 'test SSIM')):
    ax.bar(range(len(rows)), [r[key] for r in rows], yerr=[r.get(f'{key}_std') or 0 for r in rows],
           color='tab:blue', capsize=3)
    for i, p in enumerate(pca_rows):
      ax.axhline(p[key], color=f'C{i + 1}', linestyle='--', label=p['member'])
    ax.set_xticks(range(len(rows)), names, rotation=30, ha='right')
    ax.set_ylabel(label)
    if pca_rows:
      ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'psnr_ssim.png'), dpi=110)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(7, 4.5))
  for r in rows:
    path = os.path.join(r['workdirs'][0], 'metrics.jsonl')
    if os.path.isfile(path):
      with open(path) as f:
        vals = [x for x in map(json.loads, f) if x.get('split') == 'validation']
      if vals:
        ax.plot([v['step'] for v in vals], [v['psnr'] for v in vals], marker='o', label=r['member'])
  ax.set_xlabel('training step')
  ax.set_ylabel('validation PSNR (dB)')
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'validation_psnr.png'), dpi=110)
  plt.close(fig)

  # S3: training loss against training seconds (evaluation excluded), every member.
  fig, ax = plt.subplots(figsize=(7, 4.5))
  positive = True
  for r in rows:
    path = os.path.join(r['workdirs'][0], 'metrics.jsonl')
    if os.path.isfile(path):
      with open(path) as f:
        pts = [(x['seconds'], x['loss']) for x in map(json.loads, f)
               if x.get('split') == 'train' and 'seconds' in x]
      if pts:
        ax.plot(*zip(*pts), label=r['member'])
        positive = positive and min(p[1] for p in pts) > 0
  ax.set_xlabel('training time (s)')
  ax.set_ylabel('training loss')
  ax.set_yscale('log' if positive else 'linear')  # neg_psnr (-dB) is below 0.
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'loss_vs_time.png'), dpi=110)
  plt.close(fig)

  strips, labels = [], []
  for r in rows:
    path = os.path.join(r['workdirs'][0], 'test_samples.npz')
    if os.path.isfile(path):
      with np.load(path) as z:
        if not strips:
          strips.append(z['images'][:n_images] / 255.0)
          labels.append('original')
        strips.append(z['reconstructions'][:n_images])
        labels.append(r['member'])
  for k, images in pca_images.items():
    strips.append(images[:n_images])
    labels.append(f'PCA ({k})')
  if strips:
    n = min(len(s) for s in strips)
    fig, axes = plt.subplots(len(strips), n, figsize=(1.1 * n + 1.6, 1.1 * len(strips)),
                             squeeze=False)
    for i, (strip, label) in enumerate(zip(strips, labels)):
      for j in range(n):
        im = np.clip(strip[j], 0, 1)
        axes[i, j].imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap='gray', vmin=0, vmax=1)
        axes[i, j].set_xticks([])
        axes[i, j].set_yticks([])
      axes[i, 0].set_ylabel(label, rotation=0, ha='right', va='center', fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, 'reconstructions.png'), dpi=110)
    plt.close(fig)


def write_x_figures(workdir, x_axis, rows, pca_rows, split, n_images, with_classifier):
  """S2's figures: accuracy ratio and PSNR against x (e.g. the compression rate), models
  and PCA on the same axes; and per member the original, a few code channels and the
  reconstruction of the first test images."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  x_name = x_axis.split('.')[-1]
  panels = ([('accuracy_ratio', 'classifier accuracy ratio\n(reconstructions / originals)')]
            if with_classifier else []) + [('test_psnr', 'test PSNR (dB)')]
  fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
  for ax, (key, label) in zip(axes[0], panels):
    for kind, rs, style in (('autoencoder', rows, 'o-'), ('PCA, same floats', pca_rows, 's--')):
      pts = sorted((r['x'], r[key]) for r in rs
                   if r.get('x') is not None and r.get(key) is not None and math.isfinite(r[key]))
      if pts:
        ax.plot(*zip(*pts), style, label=kind)
    xs = sorted({r['x'] for r in rows if r.get('x') is not None})
    if xs and all(isinstance(x, (int, float)) and x > 0 for x in xs):
      ax.set_xscale('log', base=2)
      ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel(x_name)
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, f'{x_name}_curves.png'), dpi=110)
  plt.close(fig)

  first = next(baselines._chunks(split, max(n_images, 1)))[0]  # pylint: disable=protected-access
  n = min(3, n_images, split.n)
  strips = []  # (member label, [(title, image)])
  for r in rows:
    ae = _loaded(r['workdirs'][0])
    if ae is None:
      continue
    images = first[:n]
    code = np.asarray(ae.encode(ae.variables, images)['latent'], np.float32)
    recon = np.asarray(ae.reconstruct(images))
    cells = []
    for i in range(n):
      cells.append(('original', np.asarray(images[i]) / 255.0))
      for title, ch in _code_channels(code[i]):
        cells.append((title, ch))
      cells.append(('output', recon[i]))
    strips.append((f'{r["member"]}\n{x_name} {_fmt(r.get("x"))}', cells))
  if not strips:
    return
  cols = max(len(c) for _, c in strips)
  fig, axes = plt.subplots(len(strips), cols, figsize=(1.15 * cols + 1.4, 1.3 * len(strips)),
                           squeeze=False)
  for i, (label, cells) in enumerate(strips):
    for j in range(cols):
      ax = axes[i, j]
      ax.set_xticks([])
      ax.set_yticks([])
      if j >= len(cells):
        ax.axis('off')
        continue
      title, im = cells[j]
      im = np.clip(im, 0, 1)
      ax.imshow(im[..., 0] if im.ndim == 3 and im.shape[-1] == 1 else im,
                cmap='gray' if im.ndim == 2 or im.shape[-1] == 1 else None, vmin=0, vmax=1,
                interpolation='nearest')
      if i == 0:
        ax.set_title(title, fontsize=7)
    axes[i, 0].set_ylabel(label, rotation=0, ha='right', va='center', fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'codes.png'), dpi=110)
  plt.close(fig)


def _code_channels(code, k: int = 3):
  """Up to k channels of one image's code as [0, 1] pictures (each channel scaled by its
  own range); a flat code is shown as one near-square picture."""
  if code.ndim == 1:
    side = math.ceil(math.sqrt(code.size))
    code = np.pad(code, (0, side * side - code.size)).reshape(side, side, 1)
  out = []
  for c in range(min(k, code.shape[-1])):
    ch = code[..., c]
    lo, hi = float(ch.min()), float(ch.max())
    out.append((f'code ch {c}', (ch - lo) / (hi - lo) if hi > lo else np.zeros_like(ch)))
  return out
