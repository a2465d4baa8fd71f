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
  classifier/                   with the classifier evaluator: the classifier trained on the originals
  loss_vs_time.png              training loss against training seconds, every member (S3)
  rate_distortion.{md,csv,png}  with the rate_distortion evaluator: PSNR/SSIM against bits per pixel
                                of every code (decoded from real bitstreams), PCA, JPEG, WebP
  members/*/code_models/, code_models/pca<k>/
                                the quantizer steps and probability tables of each point
                                (flax_cae.codec.bitstream.CodeModel.load), beside the checkpoints
  members/*/visualize/          with the visualize evaluator: t-SNE maps, interpolations, snapshots (S4)
  <x>_curves.png, codes.png     with study.x_axis (S2: model.rate): accuracy ratio and PSNR
                                against x, models and PCA; per member original/code/output

With a classifier (`study.evals.classifier`: trained here from its `train` overrides of the base
config, or a finished one given as its `workdir`), every row also has the classifier's
accuracy on the test images, on their reconstructions and the ratio (S2), PCA rows too.

Run again, the study skips finished members (those with results.json) and resumes a
member in progress from its checkpoint, exactly as a single run resumes.
"""

import os
import shutil

import jax
from absl import logging

from flax_cae.evaluation import nl_means
from flax_cae.runtime import errors
from flax_cae.training import loop
from flax_cae.training import resume
from flax_cae.training import checks
from flax_cae.training import run as run_lib
from flax_cae.runtime import writers
from flax_cae.data import noise as noise_lib
from flax_cae.runtime import workdir as workdir_lib
from flax_cae.data import pipeline
from flax_cae.studies import plan as plan_lib
from flax_cae.studies import members as members_lib
from flax_cae.studies import evals
from flax_cae.studies import figures
from flax_cae.studies import tables
from flax_cae.studies import tuning


def run_study(config, workdir: str) -> dict:
  """Trains every member of the study `config` in `workdir` and writes its tables and
  figures (see the module docstring). Returns {'rows': [...], 'pca': [baseline rows]}."""
  base, study, members = plan_lib.plan(config)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  workdir_lib.check_kind(workdir, 'study', study.get('name', ''))
  together = {'yes': True, 'no': False}.get(study.train_together,
                                            plan_lib.TOGETHER_AUTO.get(jax.default_backend(), False))
  with loop.random_streams():
    mesh = pipeline.make_mesh()
    checks.validate(base, mesh.devices.size)
    splits = run_lib.load_data(base, mesh)  # read once, shared by every member
  classifier = None  # a finished classifier is checked before the study's workdir is made
  if 'classifier' in study.evals:
    classifier = evals.open_classifier(evals.settings(study, 'classifier'), splits)
  workdir, created = workdir_lib.make(workdir)
  ctx = evals.Context(workdir=workdir, study=study, base=base, splits=splits, rows=[],
                      classifier=classifier)
  try:
    if writers.is_writer():
      workdir_lib.mark_study(workdir, study.get('name', ''))
    return _train_and_report(ctx, members, together)
  except errors.UserError:
    written = [f for d, _, files in os.walk(workdir) for f in files
               if os.path.join(d, f) != os.path.join(workdir, workdir_lib.STUDY_FILE)]
    if created and not written:  # refused before anything was trained: leave no workdir
      shutil.rmtree(workdir)
    raise


def _stopped() -> dict:
  logging.warning('Study stopped by SIGTERM; run the same command to resume it.')
  return {'preempted': True}


def _train_and_report(ctx: evals.Context, members, together) -> dict:
  """run_study's work once everything is checked: train, evaluate, write."""
  study, workdir, splits = ctx.study, ctx.workdir, ctx.splits
  if 'classifier' in study.evals and ctx.classifier is None:
    if not evals.train_classifier(ctx, evals.settings(study, 'classifier')):
      return _stopped()
  chosen = {}
  if study.tune_learning_rate:
    chosen = tuning.tune_learning_rates(ctx.base, study, members, workdir, splits, together)
    if chosen.get('preempted'):
      return {'preempted': True}
    for name, configs in members:
      for c in configs:
        c.optimizer.learning_rate = chosen[name][0]
    tables.write_tuning(workdir, chosen)

  keys = {(name, s): members_lib.member_key(name, s, study.num_seeds)
          for name, configs in members for s in range(len(configs))}
  member_dir = lambda key: os.path.join(workdir, 'members', key)
  results = members_lib.train_jobs(
      [(keys[name, s], member_dir(keys[name, s]), c)
       for name, configs in members for s, c in enumerate(configs)],
      workdir, splits, together, '')
  if results.get('preempted'):
    return _stopped()

  for name, configs in members:
    row = tables.row(name, [(results[keys[name, s]], member_dir(keys[name, s]))
                            for s in range(study.num_seeds)], chosen.get(name))
    noise = configs[0].data.get('noise') or {}
    if noise_lib.is_on(noise):
      row['noise'] = nl_means.describe(noise).split('(')[1].rstrip(')')
      row['noise_settings'] = noise
    if study.x_axis:
      row['x'] = resume.flat_config(configs[0])[study.x_axis]
    ctx.rows.append(row)
  evals.run(ctx, after_tables=False)
  if writers.is_writer():
    tables.write_tables(workdir, study, ctx.rows, ctx.baseline_rows, ctx.base, splits,
                        ctx.classifier)
    figures.write_figures(workdir, ctx.rows, ctx.baseline_rows, ctx.pca_images,
                          study.num_grid_images)
    if study.x_axis:
      figures.write_x_figures(workdir, study.x_axis, ctx.rows, ctx.baseline_rows, ctx.shown,
                              study.num_grid_images, ctx.classifier is not None)
    evals.run(ctx, after_tables=True)
  logging.info('Study written to %s (study.md, study.csv, *.png).', workdir)
  return {'rows': ctx.rows, 'pca': ctx.baseline_rows}
