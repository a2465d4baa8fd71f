"""What a study evaluates once its members have trained: a registry of evaluators, as
big_vision's `evaluators`.

A study config names its evaluators in `study.evals`, each with its settings, e.g.

  evals=dict(pca={}, classifier=dict(train={'model': {'name': 'lenet5'},
                                             'loss': {'name': 'cross_entropy'}}))

and every setting can be changed by a flag (`--config.study.evals.classifier.workdir=DIR`).
They run in the registry's order, whatever the config's: `pca`, `nl_means` and `classifier`
add rows and columns to the study's table; after the table is written, `rate_distortion` and
`visualize` write their own files. An unknown evaluator or setting is one sentence listing
the valid ones.
"""

import copy
import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from flax_cae import models
from flax_cae.codec import entropy
from flax_cae.codec import rate_distortion as rd
from flax_cae.data import noise as noise_lib
from flax_cae.data import pipeline
from flax_cae.evaluation import nl_means
from flax_cae.evaluation import pca as pca_lib
from flax_cae.evaluation import pictures
from flax_cae.evaluation import trained as trained_lib
from flax_cae.runtime import cli
from flax_cae.runtime import errors
from flax_cae.runtime import machine
from flax_cae.runtime.errors import ConfigError
from flax_cae.studies import members as members_lib
from flax_cae.studies import tables
from flax_cae.training import checks

ACCURACIES = ('accuracy_original', 'accuracy_reconstruction', 'accuracy_ratio')


@dataclasses.dataclass
class Context:
  """What the evaluators read and add to: the member rows of the table, the baselines'
  rows beside them (`baseline_rows`), and what one evaluator leaves for the next."""
  workdir: str
  study: Any
  base: Any
  splits: dict
  rows: list
  baseline_rows: list = dataclasses.field(default_factory=list)
  pca: Any = None          # the fitted pca_lib.PCA, once the pca evaluator has run
  pca_images: dict = dataclasses.field(default_factory=dict)  # floats -> first test images
  classifier: Any = None   # the loaded classifier (trained_lib.Trained)

  @property
  def input_floats(self) -> int:
    """Floats in one image: a code at least this large compresses nothing."""
    return int(np.prod(self.splits['train'].image_shape))

  @property
  def shown(self):
    """The split a study reports: test, else validation."""
    return self.splits['test'] if self.splits['test'].n else self.splits['validation']


@dataclasses.dataclass(frozen=True)
class Evaluator:
  what: str                          # one line for error messages and the README
  settings: dict                     # every setting it takes, with its default
  run: Callable[[Context, Any], None]
  after_tables: bool = False         # writes its own files once the table is written
  check: Callable[[Any, Any], None] = lambda settings, base: None  # before anything runs


# --- pca -----------------------------------------------------------------------------


def fit_pca(ctx: Context) -> list[int]:
  """PCA on the training split, once, for the members' code sizes that compress (a code at
  least as large as the image is no compression: the identity would be a perfect one)."""
  sizes = sorted({r['bottleneck_floats'] for r in ctx.rows
                  if r['bottleneck_floats'] and r['bottleneck_floats'] < ctx.input_floats})
  if sizes and ctx.pca is None:
    logging.info('Study: fitting PCA on %d training images for %s floats.',
                 ctx.splits['train'].n, sizes)
    ctx.pca = pca_lib.PCA(ctx.splits['train'])
  return sizes


def run_pca(ctx: Context, settings):
  """A row per member code size: PCA with as many floats, scored on the test split, and its
  reconstructions of the first test images for reconstructions.png."""
  del settings
  input_floats = ctx.input_floats
  n_images = ctx.study.num_grid_images
  sizes = fit_pca(ctx)
  if not sizes:
    return
  first = pipeline.first_images(ctx.splits['test'], n_images)
  for k in sizes:
    s = ctx.pca.score(ctx.splits['test'], k)
    ctx.baseline_rows.append({
        'member': f'PCA ({k} floats)', 'seeds': 1, 'test_psnr': s['psnr'],
        'test_ssim': s['ssim'], 'test_mse': s['mse'], 'test_snr': s['snr'],
        'bottleneck_floats': k, 'pca_floats': k,
        'compression_ratio': input_floats / k, 'parameters': k * (input_floats + 1),
        'x': next((r.get('x') for r in ctx.rows if r['bottleneck_floats'] == k), None),
        'note': 'linear code fitted on the training split'})
    ctx.pca_images[k] = np.asarray(ctx.pca.reconstruct(first, k))


# --- nl_means --------------------------------------------------------------------------


def run_nl_means(ctx: Context, settings):
  """Non-local means (Buades, Coll and Morel 2005, scikit-image) on the same noisy test
  images as each denoising member's noise setting: a row per setting, no training."""
  del settings
  noises = {}  # noise settings of the denoising members, in order
  for row in ctx.rows:
    noise = row.get('noise_settings')
    if noise:
      noises.setdefault(noise_lib.params(noise), noise)
  for noise in noises.values():
    name = nl_means.describe(noise)
    logging.info('Study: %s on %d test images.', name, ctx.shown.n)
    scored = nl_means.score_nl_means(ctx.shown, noise)
    ctx.baseline_rows.append({'member': name, 'seeds': 1,
                              'noise': name.split('(')[1].rstrip(')'),
                              **{f'test_{k}': v for k, v in scored.items()},
                              'note': 'classical denoiser (scikit-image), no training'})


# --- classifier ------------------------------------------------------------------------


def classifier_config(base, settings):
  """The base config with the classifier's `train` overrides (e.g. model.name=lenet5)."""
  c = copy.deepcopy(base)
  cli.update_config(c, settings.train, 'study.evals.classifier.train')
  if c.model.name not in models.CLASSIFIERS:
    raise ConfigError(f'study.evals.classifier.train trains a {c.model.name}, which is not a '
                      f'classifier; set its model.name to one of '
                      f'{", ".join(models.CLASSIFIERS)}.')
  checks.validate(c, 1)
  return c


def check_classifier(settings, base):
  if not isinstance(settings.train, (dict, ml_collections.ConfigDict)):
    raise ConfigError('study.evals.classifier.train must be overrides of the base config, a '
                      "dict (e.g. {'model': {'name': 'lenet5'}}), got "
                      f'{settings.train!r}.')
  if not settings.workdir and not len(settings.train):
    raise ConfigError('study.evals.classifier needs the overrides that train a classifier '
                      "(train={'model': {'name': 'lenet5'}, 'loss': {'name': 'cross_entropy'}}) "
                      'or a finished one (--config.study.evals.classifier.workdir=DIR).')
  if not settings.workdir:
    classifier_config(base, settings)  # its names and values, before anything is trained


def open_classifier(settings, splits):
  """A finished classifier given as `workdir`, loaded and checked before the study's
  workdir is made; None when the study trains its own."""
  if not settings.workdir:
    return None
  flag = '--config.study.evals.classifier.workdir'
  given = trained_lib.load_trained(settings.workdir, flag)
  trained_lib.check_compatible(given, splits['train'].image_shape, "this study's data", flag)
  return given


def train_classifier(ctx: Context, settings) -> bool:
  """The classifier trained on the original training images in WORKDIR/classifier (once; a
  rerun reuses it). False when SIGTERM stopped its training."""
  cdir = os.path.join(ctx.workdir, 'classifier')
  out = members_lib.train_jobs([('classifier', cdir, classifier_config(ctx.base, settings))],
                               ctx.workdir, ctx.splits, False, '')
  if out.get('preempted'):
    return False
  ctx.classifier = trained_lib.load_trained(cdir)
  return True


def run_classifier(ctx: Context, settings):
  """The classifier's accuracy on the test images, on their reconstructions and the ratio
  (S2), for every member (mean over its seeds) and every PCA row."""
  del settings
  for row in ctx.rows:
    runs = [trained_lib.score_with_classifier(ctx.classifier, ctx.shown, ae.reconstruct)
            for d in row['workdirs'] if (ae := members_lib.loaded(d)) is not None]
    for key in ACCURACIES:
      row[key] = tables.mean_std([r[key] for r in runs])[0]
  for row in ctx.baseline_rows:
    if row.get('pca_floats'):
      scored = trained_lib.score_with_classifier(
          ctx.classifier, ctx.shown, lambda images, k=row['pca_floats']: ctx.pca.reconstruct(
              images, k))
      row.update({key: scored[key] for key in ACCURACIES})


# --- rate_distortion -------------------------------------------------------------------


def check_rate_distortion(settings, base):
  del base
  steps, qualities = tuple(settings.steps), tuple(settings.qualities)
  if not steps or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not f > 0
                      for f in steps):
    raise ConfigError(f'study.evals.rate_distortion.steps must be positive numbers (quantizer '
                      f'steps in standard deviations of each code channel), got {steps!r}; '
                      'e.g. --config.study.evals.rate_distortion.steps="(1.0, 0.5, 0.25)".')
  if any(isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 100 for q in qualities):
    raise ConfigError(f'study.evals.rate_distortion.qualities must be JPEG/WebP qualities, '
                      f'integers in 1..100, got {qualities!r}; e.g. '
                      '--config.study.evals.rate_distortion.qualities="(10, 50, 90)".')


def _member_points(row, train_u8, test_u8, steps) -> tuple[list, int | None]:
  """(the rate-distortion points of a member's first seed, its code's floats where PCA should
  be coded beside it); no points where its code is no compression or not one tensor."""
  trained = members_lib.loaded(row['workdirs'][0])
  if trained is None or trained.task == 'classification':
    return [], None
  save_dir = os.path.join(row['workdirs'][0], 'code_models')
  if trained.task == 'rate_distortion':
    return [rd.codec_points(trained.config.model.name, trained, train_u8, test_u8,
                            save_dir)], None
  parts = list(models.bottleneck(trained.model)['parts'])
  if parts != ['latent'] or not row['compression_ratio'] or row['compression_ratio'] <= 1:
    logging.info('Study: %s is left out of the rate-distortion curves (its code is %s).',
                 row['member'], 'not a compression' if parts == ['latent'] else '+'.join(parts))
    return [], None
  return rd.code_points(
      row['member'], lambda x, t=trained: t.encode(t.variables, x)['latent'],
      lambda z, t=trained: t.decode(t.variables, {'latent': jnp.asarray(z)}),
      train_u8, test_u8, steps, note=f'{row["bottleneck_floats"]} floats, quantized',
      save_dir=save_dir), row['bottleneck_floats']


def run_rate_distortion(ctx: Context, settings):
  """Compression in bytes (flax_cae/codec/rate_distortion.py): every member's code (first
  seed) quantized, range-coded and decoded from its bytes, PCA at each member's floats coded
  the same way, JPEG and WebP: rate_distortion.md/.csv/.png."""
  train_u8 = rd.split_images(ctx.splits['train'], entropy.FIT_IMAGES)
  test_u8 = rd.split_images(ctx.shown)
  points, sizes = [], set()
  for row in ctx.rows:
    mine, floats = _member_points(row, train_u8, test_u8, settings.steps)
    points += mine
    if floats:
      sizes.add(floats)
  if sizes:  # PCA with as many floats as each autoencoder's code, coded the same way
    fit_pca(ctx)
    for k in sorted(sizes):
      points += rd.code_points(f'PCA ({k} floats)', lambda x, k=k: ctx.pca.encode(x, k),
                               lambda z, k=k: ctx.pca.decode(z), train_u8, test_u8,
                               settings.steps,
                               note='linear code, quantized like the models\' codes',
                               save_dir=os.path.join(ctx.workdir, 'code_models', f'pca{k}'))
  points += rd.classical_points(test_u8, settings.qualities)
  rd.write(ctx.workdir, points, ctx.splits['train'].image_shape, len(test_u8), machine.device())


# --- visualize -------------------------------------------------------------------------


def check_visualize(settings, base):
  del base
  pictures.check_max_points(settings.max_points, '--config.study.evals.visualize.max_points')


def run_visualize(ctx: Context, settings):
  """t-SNE maps, interpolations and snapshots (flax_cae.visualize) of every finished member,
  in its workdir's visualize/."""
  for row in ctx.rows:
    for d in row['workdirs']:
      if members_lib.finished(d):  # (visualize loads the model itself)
        logging.info('Study: visualizing %s.', d)
        pictures.visualize(d, settings.max_points)


EVALUATORS = {
    'pca': Evaluator('PCA at each member\'s number of floats, fitted on the training split',
                     {}, run_pca),
    'nl_means': Evaluator('non-local means beside each denoising member, on the same noise',
                          {}, run_nl_means),
    'classifier': Evaluator('a classifier\'s accuracy on the reconstructions (S2)',
                            {'train': {}, 'workdir': ''}, run_classifier,
                            check=check_classifier),
    'rate_distortion': Evaluator('PSNR and SSIM against bytes: codes, PCA, JPEG, WebP',
                                 {'steps': (1.0, 0.5, 0.25, 0.125),
                                  'qualities': (5, 10, 20, 30, 50, 70, 90)},
                                 run_rate_distortion, after_tables=True,
                                 check=check_rate_distortion),
    'visualize': Evaluator('t-SNE maps, interpolations and snapshots of every member (S4)',
                           {'max_points': 2000}, run_visualize, after_tables=True,
                           check=check_visualize),
}


def defaults(**given) -> dict:
  """`study.evals` for a config: each named evaluator with every setting it takes (so a flag
  can set any of them), the given ones over the defaults."""
  return {name: {**copy.deepcopy(EVALUATORS[name].settings), **mine}
          if name in EVALUATORS and isinstance(mine, dict) else mine
          for name, mine in given.items()}


def settings(study, name: str):
  """The settings of evaluator `name` in `study.evals`, with its defaults filled in."""
  given, known = study.evals[name], EVALUATORS[name].settings
  if not isinstance(given, (dict, ml_collections.ConfigDict)):
    raise ConfigError(f'study.evals.{name} must be its settings, a dict (e.g. {name}={{}}), '
                      f'got {given!r}; an evaluator runs when study.evals names it.')
  for key in given:
    if key not in known:
      raise ConfigError(f'study.evals.{name} has no setting {key!r}; '
                        + (f'its settings are {", ".join(sorted(known))}.' if known else
                           f'it takes none (write {name}={{}}).'))
  return ml_collections.ConfigDict({**copy.deepcopy(known), **{k: given[k] for k in given}})


def check(study, base):
  """Every evaluator the study names, and its settings, before anything is read or
  trained."""
  for name in study.evals:
    if name not in EVALUATORS:
      raise errors.unknown_name('study evaluator (study.evals)', name, EVALUATORS)
    EVALUATORS[name].check(settings(study, name), base)


def chosen(study, after_tables: bool) -> list[tuple[str, Any]]:
  """[(name, settings)] of the study's evaluators of one phase, in the registry's order."""
  return [(name, settings(study, name)) for name, e in EVALUATORS.items()
          if name in study.evals and e.after_tables == after_tables]


def run(ctx: Context, after_tables: bool):
  for name, s in chosen(ctx.study, after_tables):
    EVALUATORS[name].run(ctx, s)
