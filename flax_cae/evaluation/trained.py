"""Judge an autoencoder the S2 way: how well does a classifier still see its reconstructions?

  python -m flax_cae.evaluate --workdir=AE_DIR --classifier=CLASSIFIER_DIR

Both are workdirs of `launch.py`: an autoencoder and a classifier (e.g.
configs/cifar10_lenet5.py) trained on images of the same shape. Each is loaded from its kept
checkpoint (the best by validation, as results.json reports; of a run still training, its
best so far, with a warning). Loading only reads: nothing of a run is written, cleaned or
deleted. On the
autoencoder's evaluation split (test, else validation) it reports the classifier's accuracy
on the original images, on their reconstructions, and the ratio (S2's "performance ratio"),
with the reconstructions' PSNR, SSIM and MSE; it writes classifier_eval.json and .md to AE_DIR
(or --out=FOLDER).
"""

import copy
import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from flax_cae.measures import metrics as metrics_lib
from flax_cae import models
from flax_cae.training import tasks
from flax_cae.runtime import workdir as workdir_lib
from flax_cae.runtime.checkpoint import Reader
from flax_cae.data import pipeline, sources
from flax_cae.runtime.errors import ConfigError

CHUNK = 500


@dataclasses.dataclass
class Trained:
  """A finished run, loaded: its config, results, model and kept variables."""
  workdir: str
  config: ml_collections.ConfigDict
  results: dict
  model: Any
  variables: dict
  finished: bool = True  # False: a run in progress, or stopped before its end

  @property
  def task(self) -> str:
    return tasks.task_name(self.config)

  @functools.cached_property
  def apply(self) -> Callable:
    """uint8 images [B, H, W, C] -> the model's outputs (compiled once)."""
    return jax.jit(lambda v, x: self.model.apply(v, pipeline.to_float(x)))

  @functools.cached_property
  def encode(self) -> Callable:
    """uint8 images -> the code (autoencoders)."""
    return jax.jit(lambda v, x: self.model.apply(v, pipeline.to_float(x), method='encode'))

  @functools.cached_property
  def decode(self) -> Callable:
    """A code -> the reconstruction (autoencoders)."""
    return jax.jit(lambda v, code: self.model.apply(v, code, method='decode'))

  def reconstruct(self, images_u8):
    return self.apply(self.variables, images_u8)['reconstruction']

  def logits(self, images):
    """Logits of float [0, 1] (or uint8) images."""
    images = images if images.dtype == jnp.uint8 else jnp.round(images * 255).astype(jnp.uint8)
    return self.apply(self.variables, images)['logits']


def load_trained(workdir: str, flag: str = '--workdir', unfinished: bool = False) -> Trained:
  """The kept model of a workdir: of a finished run, the checkpoint its results.json reports;
  of a run in progress (a live process holds its lock), or with `unfinished` of one stopped
  before its end, the best checkpoint it keeps so far, with a warning that says so. Reading
  never writes, cleans or deletes anything there (checkpoint.Reader), and a checkpoint the
  run removes while it is read is chosen again. A workdir with nothing to read is one
  sentence."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  results = _read_json(os.path.join(workdir, 'results.json'))
  running = workdir_lib.holder(workdir)
  config = _read_json(os.path.join(workdir, 'config.json'))
  in_progress = running is not None or (unfinished and results is None)
  if config is None or (results is None and not in_progress):
    raise ConfigError(f'{flag}={workdir} holds no finished run (no results.json) and no run is '
                      f'training there now; train it first with launch.py --workdir={workdir}, '
                      'or give another folder.')
  config = ml_collections.ConfigDict(config)
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(ckpt_dir):
    if (results or {}).get('members_trained_together', 1) > 1:
      raise ConfigError(f'{flag}={workdir} has no checkpoints of its own (members trained '
                        'together keep theirs in the study\'s groups/ folder); train it alone, '
                        'e.g. with --config.study.train_together=no.')
    raise ConfigError(f'{flag}={workdir} has no checkpoints/ folder (deleted or moved?), so '
                      'there is no model to load; train it again in a new workdir.')
  reader = Reader(ckpt_dir)
  try:
    step, state, image_shape = _read_kept(reader, workdir, flag, results, running, config,
                                          in_progress)
  finally:
    reader.close()
  if running is not None:
    logging.warning('%s is being trained now by %s: using its best checkpoint so far (step %d); '
                    'it may change as training goes on.', workdir,
                    workdir_lib.describe_holder(running), step)
  elif in_progress:
    logging.warning('%s was stopped before its end: using its best checkpoint so far (step %d).',
                    workdir, step)
  finished = results is not None and running is None
  results = dict(results or {}, best_step=step)
  results.setdefault('image_shape', list(image_shape))
  num_classes = (results.get('model_options') or {}).get('num_classes') or 10
  model = models.build_model(config.model, image_shape, num_classes)
  variables = {'params': state.get('ema_params') or state['params']}  # what was evaluated
  if state.get('batch_stats'):
    variables['batch_stats'] = state['batch_stats']
  return Trained(workdir, config, results, model, variables, finished)


def _read_json(path):
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


# How often a reader picks again when the run in progress deletes the checkpoint being read
# (it keeps the latest few and the best: a step disappears only when a newer one is written),
# waiting a little longer each time so a run that saves every few steps lets one read finish.
READ_ATTEMPTS = 30
RETRY_SECONDS = 0.05


def _read_kept(reader: Reader, workdir, flag, results, running, config, in_progress):
  """(step, state, image shape) of the kept checkpoint (see load_trained)."""
  for attempt in range(READ_ATTEMPTS):
    if attempt:
      time.sleep(RETRY_SECONDS * min(attempt, 10))
    steps = reader.steps()
    if not in_progress:
      step = results.get('best_step')
      if step not in steps:
        raise ConfigError(f'{flag}={workdir} no longer holds the checkpoint of step {step} that '
                          'its results.json reports; train it again in a new workdir.')
    elif not steps and running is None:
      raise ConfigError(f'{flag}={workdir} holds no checkpoint yet (its run stopped before its '
                        'first); resume it with its launch.py command first.')
    elif not steps:
      raise ConfigError(
          f'{flag}={workdir} is being trained now by {workdir_lib.describe_holder(running)} and '
          'has no checkpoint yet; run this again after its first one (it saves every '
          f'checkpoint_every_epochs={config.get("checkpoint_every_epochs", 1)} epochs).')
    else:  # the run's own record says which checkpoint it keeps as the best so far
      try:
        meta = reader.meta(steps[-1])
      except Reader.Gone:
        continue
      best = (meta.get('best_step') or [None])[0]
      step = best if best in steps else steps[-1]
    try:
      state, meta = reader.restore_raw(step)
    except Reader.Gone:
      if running is None:
        raise ConfigError(f'{flag}={workdir}: the checkpoint of step {step} was deleted while '
                          'it was being read; is a run using this workdir?') from None
      continue
    shape = (meta.get('model') or {}).get('image_shape') or (results or {}).get('image_shape')
    return step, state, tuple(shape)
  raise ConfigError(f'{flag}={workdir}: the run training there replaced its checkpoints '
                    f'{READ_ATTEMPTS} times while they were being read; try again.')


def labeled_chunks(split: pipeline.Split, size: int = CHUNK):
  """(uint8 images [size, ...], int32 labels [size], bool mask [size]) over a split."""
  for start in range(0, split.n, size):
    idx = np.arange(start, start + size)
    mask = idx < split.n
    if split.on_device:
      yield pipeline.padded_slice(split.images, start, size), pipeline.padded_slice(split.labels, start, size), mask
    else:
      arrays = sources.load_arrays(split.source, idx[mask])
      yield (jnp.asarray(pipeline.pad_to(arrays['image'], size)),
             jnp.asarray(pipeline.pad_to(arrays['label'], size)), mask)


def eval_data(trained: Trained, data_dir: str = ''):
  """The run's data config (a copy), read from `data_dir` where given."""
  data = copy.deepcopy(trained.config.data)
  if data_dir:
    data.data_dir = data_dir
  return data


def eval_split(trained: Trained, data_dir: str = '') -> tuple[str, pipeline.Split]:
  """(name, split) a tool scores a trained model on: the run's reported split (test, else
  validation; a run in progress without results.json: test if it has images)."""
  data = eval_data(trained, data_dir)
  mesh = pipeline.make_mesh(jax.local_devices()[:1])
  name = trained.results.get('eval_split', 'test')
  split = pipeline.load_split(data, name, mesh, 1)
  if not split.n and 'eval_split' not in trained.results:
    name, split = 'validation', pipeline.load_split(data, 'validation', mesh, 1)
  return name, split


def check_compatible(classifier: Trained, image_shape, what: str, flag: str = '--classifier'):
  if classifier.task != 'classification':
    raise ConfigError(f'{flag}={classifier.workdir} holds a {classifier.task} model '
                      f'({classifier.config.model.name}), not a classifier; train one with '
                      'configs/cifar10_lenet5.py (or mnist_lenet5.py) and pass its workdir.')
  if tuple(classifier.results['image_shape']) != tuple(image_shape):
    raise ConfigError(f'the classifier in {classifier.workdir} was trained on '
                      f'{tuple(classifier.results["image_shape"])} images but {what} has '
                      f'{tuple(image_shape)}; use a classifier trained on the same data set.')


def score_with_classifier(classifier: Trained, split: pipeline.Split,
                          reconstruct: Callable) -> dict:
  """The classifier's accuracy on a split's images and on `reconstruct(images_u8)` (float
  [0, 1]), their ratio, and the reconstructions' mean per-image PSNR, SSIM, MSE."""
  totals = None
  for images, labels, mask in labeled_chunks(split):
    recon = reconstruct(images)
    sums = _sums(classifier.logits(images), classifier.logits(recon), labels,
                 metrics_lib.image_metrics(recon, pipeline.to_float(images)), jnp.asarray(mask))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  out = metrics_lib.finalize(jax.device_get(totals))
  out['accuracy_ratio'] = (out['accuracy_reconstruction'] / out['accuracy_original']
                           if out['accuracy_original'] > 0 else float('nan'))
  out['count'] = split.n
  return out


@jax.jit
def _sums(logits_original, logits_reconstruction, labels, image_metrics, mask):
  per_image = {
      'accuracy_original': (jnp.argmax(logits_original, -1) == labels).astype(jnp.float32),
      'accuracy_reconstruction': (jnp.argmax(logits_reconstruction, -1) == labels
                                  ).astype(jnp.float32),
      **image_metrics}
  return metrics_lib.masked_sums(per_image, mask)


def evaluate(workdir: str, classifier_dir: str, data_dir: str = '', out_dir: str = '') -> dict:
  """Scores the autoencoder in `workdir` with the classifier in `classifier_dir` on the
  autoencoder's evaluation split; writes classifier_eval.json and .md to `out_dir` (default:
  `workdir`; the run's own files and checkpoints are never touched)."""
  ae = load_trained(workdir, '--workdir')
  if ae.task != 'reconstruction':
    raise ConfigError(f'--workdir={ae.workdir} holds a classifier, not an autoencoder; give '
                      'the autoencoder as --workdir and the classifier as --classifier.')
  classifier = load_trained(classifier_dir, '--classifier')
  check_compatible(classifier, ae.results['image_shape'], f'the autoencoder in {ae.workdir}')
  split_name, split = eval_split(ae, data_dir)
  out = score_with_classifier(classifier, split, ae.reconstruct)
  out.update(split=split_name, workdir=ae.workdir, classifier=classifier.workdir,
             classifier_model=classifier.config.model.name, model=ae.config.model.name,
             bottleneck_floats=ae.results.get('bottleneck_floats'))
  out_dir = os.path.abspath(os.path.expanduser(out_dir)) if out_dir else ae.workdir
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise ConfigError(f'--out={out_dir} cannot be used ({e.strerror or e}); choose a folder you '
                      'can write to.') from None
  with open(os.path.join(out_dir, 'classifier_eval.json'), 'w') as f:
    json.dump(out, f, indent=2)
  with open(os.path.join(out_dir, 'classifier_eval.md'), 'w') as f:
    f.write(markdown(out))
  return out


def markdown(r: dict) -> str:
  return ('| model | bottleneck floats | accuracy, originals | accuracy, reconstructions | ratio '
          '| PSNR (dB) | SSIM |\n|---|---|---|---|---|---|---|\n'
          f"| {r['model']} | {r['bottleneck_floats']} | {r['accuracy_original']:.4f} | "
          f"{r['accuracy_reconstruction']:.4f} | {r['accuracy_ratio']:.4f} | {r['psnr']:.2f} | "
          f"{r['ssim']:.4f} |\n\n{r['classifier_model']} ({r['classifier']}) on the "
          f"{r['count']} images of the {r['split']} split of {r['workdir']}.\n")
