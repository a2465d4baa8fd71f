"""Judge an autoencoder the S2 way: how well does a classifier still see its reconstructions?

  python -m flax_cae.evaluate --workdir=AE_DIR --classifier=CLASSIFIER_DIR

Both are finished workdirs of `launch.py` (results.json written): an autoencoder and a
classifier (e.g. configs/cifar10_lenet5.py) trained on images of the same shape. Each is
loaded from its kept checkpoint (the best by validation, as results.json reports). On the
autoencoder's evaluation split (test, else validation) it reports the classifier's accuracy
on the original images, on their reconstructions, and the ratio (S2's "performance ratio"),
with the reconstructions' PSNR, SSIM and MSE; it writes AE_DIR/classifier_eval.json and .md.
"""

import dataclasses
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from flax_cae import metrics as metrics_lib
from flax_cae import models, tasks
from flax_cae.baselines import _slice  # pylint: disable=protected-access
from flax_cae.checkpoint import Checkpoints
from flax_cae.data import pipeline, sources
from flax_cae.errors import ConfigError, UserError

CHUNK = 500


@dataclasses.dataclass
class Trained:
  """A finished run, loaded: its config, results, model and kept variables."""
  workdir: str
  config: ml_collections.ConfigDict
  results: dict
  model: Any
  variables: dict

  @property
  def task(self) -> str:
    return tasks.task_name(self.config)

  @functools.cached_property
  def apply(self) -> Callable:
    """uint8 images [B, H, W, C] -> the model's outputs (compiled once)."""
    return jax.jit(lambda v, x: self.model.apply(v, tasks.to_float(x)))

  @functools.cached_property
  def encode(self) -> Callable:
    """uint8 images -> the code (autoencoders)."""
    return jax.jit(lambda v, x: self.model.apply(v, tasks.to_float(x), method='encode'))

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


def load_trained(workdir: str, flag: str = '--workdir') -> Trained:
  """The kept model of a finished workdir; a missing or unfinished one is one sentence."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  results_path = os.path.join(workdir, 'results.json')
  if not os.path.isfile(results_path):
    raise ConfigError(f'{flag}={workdir} holds no finished run (no results.json); train it '
                      f'first with launch.py --workdir={workdir}, or give another folder.')
  with open(results_path) as f:
    results = json.load(f)
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(ckpt_dir):
    raise ConfigError(f'{flag}={workdir} has no checkpoints of its own (members trained '
                      'together keep theirs in the study\'s groups/ folder); train it alone, '
                      'e.g. with --config.study.train_together=no.')
  ckpts = Checkpoints(ckpt_dir, keep=max(1, config.get('keep_checkpoints', 1)))
  try:
    step = results.get('best_step')
    if step not in ckpts.all_steps():
      raise ConfigError(f'{flag}={workdir} no longer holds the checkpoint of step {step} that '
                        'its results.json reports; train it again in a new workdir.')
    state, _ = ckpts.restore_raw(step)
  finally:
    ckpts.close()
  num_classes = (results.get('model_options') or {}).get('num_classes') or 10
  model = models.build_model(config.model, tuple(results['image_shape']), num_classes)
  variables = {'params': state.get('ema_params') or state['params']}  # what was evaluated
  if state.get('batch_stats'):
    variables['batch_stats'] = state['batch_stats']
  return Trained(workdir, config, results, model, variables)


def labeled_chunks(split: pipeline.Split, size: int = CHUNK):
  """(uint8 images [size, ...], int32 labels [size], bool mask [size]) over a split."""
  for start in range(0, split.n, size):
    idx = np.arange(start, start + size)
    mask = idx < split.n
    if split.on_device:
      yield _slice(split.images, start, size), _slice(split.labels, start, size), mask
    else:
      arrays = sources.load_arrays(split.source, idx[mask])
      yield (jnp.asarray(pipeline.pad_to(arrays['image'], size)),
             jnp.asarray(pipeline.pad_to(arrays['label'], size)), mask)


def check_compatible(classifier: Trained, image_shape, what: str):
  if classifier.task != 'classification':
    raise ConfigError(f'--classifier={classifier.workdir} holds a {classifier.config.model.name}, '
                      'not a classifier; train one with configs/cifar10_lenet5.py (or '
                      'mnist_lenet5.py) and pass its workdir.')
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
                 metrics_lib.image_metrics(recon, tasks.to_float(images)), jnp.asarray(mask))
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


def evaluate(workdir: str, classifier_dir: str, data_dir: str = '') -> dict:
  """Scores the autoencoder in `workdir` with the classifier in `classifier_dir` on the
  autoencoder's evaluation split; writes classifier_eval.json and .md there."""
  ae = load_trained(workdir, '--workdir')
  if ae.task != 'reconstruction':
    raise ConfigError(f'--workdir={ae.workdir} holds a classifier, not an autoencoder; give '
                      'the autoencoder as --workdir and the classifier as --classifier.')
  classifier = load_trained(classifier_dir, '--classifier')
  check_compatible(classifier, ae.results['image_shape'], f'the autoencoder in {ae.workdir}')
  data = ae.config.data
  if data_dir:
    data.data_dir = data_dir
  split_name = ae.results.get('eval_split', 'test')
  split = pipeline.load_split(data, split_name, pipeline.make_mesh(jax.local_devices()[:1]), 1)
  out = score_with_classifier(classifier, split, ae.reconstruct)
  out.update(split=split_name, workdir=ae.workdir, classifier=classifier.workdir,
             classifier_model=classifier.config.model.name, model=ae.config.model.name,
             bottleneck_floats=ae.results.get('bottleneck_floats'))
  with open(os.path.join(ae.workdir, 'classifier_eval.json'), 'w') as f:
    json.dump(out, f, indent=2)
  with open(os.path.join(ae.workdir, 'classifier_eval.md'), 'w') as f:
    f.write(markdown(out))
  return out


def markdown(r: dict) -> str:
  return ('| model | bottleneck floats | accuracy, originals | accuracy, reconstructions | ratio '
          '| PSNR (dB) | SSIM |\n|---|---|---|---|---|---|---|\n'
          f"| {r['model']} | {r['bottleneck_floats']} | {r['accuracy_original']:.4f} | "
          f"{r['accuracy_reconstruction']:.4f} | {r['accuracy_ratio']:.4f} | {r['psnr']:.2f} | "
          f"{r['ssim']:.4f} |\n\n{r['classifier_model']} ({r['classifier']}) on the "
          f"{r['count']} images of the {r['split']} split of {r['workdir']}.\n")


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  f = flags.FLAGS
  try:
    out = evaluate(f.workdir, f.classifier, f.data_dir)
  except UserError as e:
    sys.stderr.write(f'flax-cae: error: {e}\n')
    sys.exit(2)
  print(markdown(out), end='')


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'A finished autoencoder workdir.', required=True)
  flags.DEFINE_string('classifier', None, 'A finished classifier workdir.', required=True)
  flags.DEFINE_string('data_dir', '', "Where the data set is prepared, if not the autoencoder's "
                      'data.data_dir.')
  app.run(main)
