"""The end of a run of a model that compresses: its entropy model is fitted on the codes of
its training images, saved in the workdir (codec/entropy.py's ENTROPY_FILE) and measured on
the reported split, coded image by image (results.json's `codec`: bits per pixel, PSNR and
SSIM at each quantizer step)."""

import os

import jax
import numpy as np
from absl import logging

from flax_cae.codec import container
from flax_cae.codec import entropy
from flax_cae.data.pipeline import host_copy, to_float
from flax_cae.runtime import writers
from flax_cae.training import tasks


def _variables(run, state, m: int) -> dict:
  """Member m's evaluated variables on this process's first device (everything after this
  runs on every process alike, with no collective: the codec is a host-side job)."""
  host = jax.tree.map(lambda a: host_copy(a)[m] if run.grouped else host_copy(a),
                      run.trainer.eval_variables(state))
  return jax.device_put(host, jax.local_devices()[0])


def fit(run, state, m: int, workdir: str, split, step: int) -> dict:
  """Fits, saves and measures member m's entropy model for its weights of checkpoint `step`;
  returns results.json's entries. A failure here costs the codec only: it is logged, and the
  run's results are written (without a codec: an earlier run's model is removed first)."""
  path = os.path.join(workdir, entropy.ENTROPY_FILE)
  if writers.is_writer() and os.path.exists(path):
    os.remove(path)  # (fitted for other weights, e.g. before the run was resumed for longer)
  try:
    return _fit(run, state, m, path, split, step)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('The entropy model could not be fitted (%s: %s); the results are written '
                    'without a codec. python -m flax_cae.export --workdir=%s fits one later.',
                    type(e).__name__, e, workdir)
    return {'codec': None}


def _fit(run, state, m: int, path: str, split, step: int) -> dict:
  model, train = run.model, run.splits['train']
  chunk = run.config.eval_batch_size  # (what evaluation already ran at once)
  variables = _variables(run, state, m)
  # (the variables are arguments, not constants baked into the compiled programs)
  encode_fn = jax.jit(lambda v, x: model.apply(v, to_float(x), method='encode')['latent']
                      .astype(np.float32))
  decode_fn = jax.jit(lambda v, y: model.apply(v, {'latent': y}, method='decode'))

  def encode(x):
    return encode_fn(variables, x)

  def decode(y):
    return decode_fn(variables, y)
  n_fit = entropy.fit_count(train.n, train.image_shape)
  fit_images = run.trainer.sample_images(train, n_fit)
  codes = np.concatenate([np.asarray(encode(fit_images[i:i + chunk]))
                          for i in range(0, n_fit, chunk)])
  codec = entropy.fit_for(codes, model, variables,
                          learned=tasks.task_name(run.config) == 'rate_distortion',
                          weights_step=step)
  if writers.is_writer():
    codec.save(path)
  n_eval = entropy.host_count(split.n, train.image_shape)
  points = entropy.measure(codec, encode, decode, run.trainer.sample_images(split, n_eval),
                           chunk)
  default = next(p for p in points if p['step'] == codec.default_step)
  logging.info('Codec (%s, each image coded alone): %s.', entropy.ENTROPY_FILE, ', '.join(
      f"step {p['step']:g}: {p['bpp']:.3f} bpp ({p['bpp_payload']:.3f} without the "
      f"{container.HEADER_BYTES}-byte header), {p['psnr']:.2f} dB" for p in points))
  return {'codec': {'file': entropy.ENTROPY_FILE, 'default_step': codec.default_step,
                    'learned_density': codec.learned, 'fit_images': n_fit, 'images': n_eval,
                    'points': points},
          'codec_bpp': default['bpp'], 'codec_bpp_payload': default['bpp_payload'],
          'codec_psnr': default['psnr'],
          'codec_ssim': default['ssim']}
