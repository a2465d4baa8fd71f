"""The command that turns a training workdir into a self-contained model folder that
`flax_cae.load` reads without the workdir (flax_cae/evaluation/exported.py).

  python -m flax_cae.export --workdir=W --out=DIR [--dtype=float32|float16|auto] \
      [--images=64] [--note=TEXT]

It takes the kept checkpoint (the best by validation, as results.json reports; of a run
still training or resumed and not finished, its best so far, and says so), the evaluated
parameters (the moving average where the run kept one), the entropy model and the results;
no optimizer state (a run without an entropy model, one stopped before its end or finished
by an older flax-cae, gets one fitted as a run's end fits it). On the run's reported split it measures the reconstruction PSNR and SSIM
(and the codec's bits per pixel) with the weights as stored; `--dtype=auto` stores float16
where that moves the split's PSNR by at most AUTO_DB, else float32. The first `--images`
images of the split are bundled with what the model scores on them, so a copy can be checked.
"""

import math
import time

import numpy as np

from flax_cae import __version__
from flax_cae import api
from flax_cae import models
from flax_cae.codec import entropy
from flax_cae.codec import rate_distortion
from flax_cae.evaluation import exported
from flax_cae.evaluation import trained as trained_lib
from flax_cae.runtime import cli
from flax_cae.runtime import console
from flax_cae.runtime import machine
from flax_cae.runtime import workdir as workdir_lib
from flax_cae.runtime.errors import ConfigError, UserError

AUTO_DB = 0.01
CHUNK = 500


def _rounded(trained: trained_lib.Trained, dtype: str) -> trained_lib.Trained:
  """The same model with its parameters stored as `dtype` and read back as float32."""
  import jax  # pylint: disable=g-import-not-at-top
  variables = jax.tree.map(lambda a: np.asarray(a, np.float32).astype(dtype).astype(np.float32),
                           trained.variables)
  return trained_lib.Trained(trained.workdir, trained.config, trained.results, trained.model,
                             variables)


def score(model: api.Model, images: np.ndarray) -> dict:
  """Mean per-image PSNR and SSIM of the model's reconstructions of uint8 images [N, H, W, C],
  and, for a model with a codec, its mean bits per pixel and PSNR decoded from its streams."""
  if model.task == 'classification':
    return {'count': len(images)}
  sums = {}
  for i in range(0, len(images), CHUNK):  # (bounded device memory for large photographs)
    x = images[i:i + CHUNK]
    part = dict(zip(('psnr', 'ssim'), entropy.mean_scores(model.reconstruct(x), x)))
    if model.entropy_model is not None:
      streams = model.compress(x)
      part['codec_bpp'] = 8 * float(np.mean([len(s) for s in streams])) / (
          x.shape[1] * x.shape[2])
      part.update(zip(('codec_psnr', 'codec_ssim'),
                      entropy.mean_scores(model.decompress(streams), x)))
    for k, v in part.items():
      sums[k] = sums.get(k, 0.0) + v * len(x)
  return {'count': len(images), **{k: v / len(images) for k, v in sums.items()}}


def export(workdir: str, out: str, dtype: str = 'float32', n_images: int = 64,
           data_dir: str = '', note: str = '') -> dict:
  """Writes the exported folder; returns its record (what model.json says beside the
  config and results)."""
  if dtype not in exported.DTYPES + ('auto',):
    raise ConfigError(f'--dtype={dtype} is not one of float32, float16, auto.')
  if n_images < 0:
    raise ConfigError(f'--images={n_images} must be 0 (bundle none) or more.')
  exported.check_out(out)
  running = workdir_lib.holder(workdir)
  trained = trained_lib.load_trained(workdir, unfinished=True)
  entropy_model = exported.entropy_model_of(trained.workdir, int(trained.results['best_step']))
  fitted = 'at the end of the run'
  if entropy_model is None and entropy.compresses(trained.task,
                                                  models.bottleneck(trained.model)):
    entropy_model, n = exported.fit_entropy_model(trained, data_dir)
    fitted = f'at export, on the codes of the first {n} training images'
  reference = api.Model(trained, entropy_model, workdir)
  split_name, split = trained_lib.eval_split(trained, data_dir)
  images = rate_distortion.split_images(split)
  scores = {'float32': score(reference, images)}
  if dtype != 'float32':
    scores['float16'] = score(api.Model(_rounded(trained, 'float16'), entropy_model), images)
  if dtype == 'auto':  # (nothing measured, e.g. a classifier: float32)
    moved = abs(scores['float16'].get('psnr', math.inf) - scores['float32'].get('psnr', 0.0))
    dtype = 'float16' if moved <= AUTO_DB else 'float32'
  stored = _rounded(trained, dtype)
  bundled = images[:n_images]
  step = int(trained.results['best_step'])
  record = {
      'note': note,
      'source': {'workdir': trained.workdir, 'step': step, 'total_steps':
                 trained.results.get('total_steps'), 'still_training': running is not None,
                 'finished': trained.finished},
      'exported': {'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                   'flax_cae': __version__, 'commit': machine.commit(),
                   'device': machine.device()},
      'split': {'name': split_name, 'scores_by_dtype': scores},
      'entropy_model': None if entropy_model is None else {'fitted': fitted},
      'test_images': {'count': len(bundled), 'split': split_name,
                      'scores': score(api.Model(stored, entropy_model), bundled)
                      if len(bundled) else None},
  }
  exported.write(stored, entropy_model, out, record, dtype,
                 bundled if len(bundled) else None)
  return {'dtype': dtype, **record}


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  console.setup()
  f = flags.FLAGS
  try:
    for name, what in (('workdir', 'the launch.py workdir to export'),
                       ('out', 'the new folder to write the model to')):
      if not f[name].value:
        raise ConfigError(f'--{name} is required: {what}; e.g. python -m flax_cae.export '
                          '--workdir=workdirs/best256 --out=models/best256.')
    r = export(f.workdir, f.out, f.dtype, f.images, f.data_dir, f.note)
  except UserError as e:
    cli.fail(str(e))
  src = r['source']
  print(f"Exported step {src['step']} of {src['workdir']} to {f.out} ({r['dtype']} weights)"
        + ('.' if src['finished'] else ': the run is ' + (
            'still training' if src['still_training'] else 'stopped before its end') +
            ', so this is its best checkpoint so far.'))
  if r['entropy_model'] and r['entropy_model']['fitted'].startswith('at export'):
    print(f"  The run had no entropy model: fitted {r['entropy_model']['fitted']}.")
  for dtype, s in r['split']['scores_by_dtype'].items():
    print(f"  {r['split']['name']} ({s['count']} images), {dtype} weights: " + ', '.join(
        f'{k} {v:.4f}' for k, v in s.items() if k != 'count'))


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'A launch.py workdir (finished, or its best checkpoint '
                      'so far).')
  flags.DEFINE_string('out', None, 'The folder to write (new, or empty).')
  flags.DEFINE_string('dtype', 'float32', 'float32, float16, or auto (float16 where it moves the '
                      f'reported PSNR by at most {AUTO_DB} dB).')
  flags.DEFINE_integer('images', 64, 'Images of the reported split bundled with the model.')
  flags.DEFINE_string('data_dir', '', "Where the data set is prepared, if not the run's "
                      'data.data_dir.')
  flags.DEFINE_string('note', '', 'Free text kept in model.json, e.g. how the run was trained.')
  app.run(main, flags_parser=cli.parse_flags)
