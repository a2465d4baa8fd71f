"""An exported model: a folder that holds everything `flax_cae.load` needs, and nothing of
training (no optimizer state, no checkpoints, no data).

  model.json          format, config, results, where it came from, what was measured on export
  variables.npz       the evaluated parameters (the moving average where the run kept one),
                      one array per '/'-joined path, float32 or float16
  entropy_model.npz   the entropy model (models that compress)
  test_images.npz     a few images of the run's reported split, and what the model scores on them

`python -m flax_cae.export` writes one; the shipped models (flax_cae/zoo/) are such folders.
"""

import json
import os
import shutil
import tempfile
import zipfile

import numpy as np
from absl import logging
from flax import traverse_util
from ml_collections import ConfigDict

from flax_cae import models
from flax_cae.codec import entropy
from flax_cae.data import pipeline
from flax_cae.data import sources
from flax_cae.evaluation import trained as trained_lib
from flax_cae.runtime.errors import ConfigError, StorageError, write_failure

FORMAT = 1
MODEL_FILE = 'model.json'
VARIABLES_FILE = 'variables.npz'
IMAGES_FILE = 'test_images.npz'
DTYPES = ('float32', 'float16')
CHUNK = 500


def is_export(folder: str) -> bool:
  return os.path.isfile(os.path.join(folder, MODEL_FILE))


def write(trained: trained_lib.Trained, entropy_model, out: str, record: dict,
          dtype: str = 'float32', images: np.ndarray | None = None):
  """Writes the folder `out` (which must not exist, or be empty) in one move: a temporary
  folder beside it is renamed at the end, so a failed export leaves nothing half-written."""
  if dtype not in DTYPES:
    raise ConfigError(f'--dtype={dtype} is not one of {", ".join(DTYPES)}.')
  out = check_out(out)
  try:
    tmp = tempfile.mkdtemp(prefix='.export-', dir=os.path.dirname(out))
  except OSError as e:
    raise ConfigError(f'--out={out} cannot be written ({e.strerror or e}); choose a folder you '
                      'can write to.') from None
  try:
    flat = traverse_util.flatten_dict(trained.variables, sep='/')
    with open(os.path.join(tmp, VARIABLES_FILE), 'wb') as f:
      np.savez(f, **{k: np.asarray(v, np.float32).astype(dtype) for k, v in flat.items()})
    if entropy_model is not None:
      entropy_model.save(os.path.join(tmp, entropy.ENTROPY_FILE))
    if images is not None:
      with open(os.path.join(tmp, IMAGES_FILE), 'wb') as f:
        np.savez_compressed(f, images=images)
    with open(os.path.join(tmp, MODEL_FILE), 'w') as f:
      json.dump({'format': FORMAT, 'dtype': dtype, **record,
                 'config': json.loads(trained.config.to_json_best_effort()),
                 'results': trained.results}, f, indent=2)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # (mkdtemp makes it the owner's alone)
    if os.path.isdir(out):
      os.rmdir(out)
    os.replace(tmp, out)
  except BaseException as e:
    shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(e, OSError):
      raise StorageError(f'--out={out} could not be written ({write_failure(e) or e}); nothing '
                         'was left there.') from None
    raise


def check_out(out: str) -> str:
  """The absolute path of a new (or empty) folder whose parent exists, or one sentence."""
  out = os.path.abspath(os.path.expanduser(out))
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ConfigError(f'--out={out} already exists and is not an empty folder; give a new one.')
  if not os.path.isdir(os.path.dirname(out)):
    raise ConfigError(f'--out={out}: its parent folder {os.path.dirname(out)} does not exist; '
                      'create it first.')
  return out


def read(folder: str) -> tuple[trained_lib.Trained, dict]:
  """(the model, its model.json) of an exported folder; a folder that is not one, or of a
  newer format, is one sentence."""
  folder = os.path.abspath(os.path.expanduser(folder))
  try:
    with open(os.path.join(folder, MODEL_FILE)) as f:
      info = json.load(f)
    with np.load(os.path.join(folder, VARIABLES_FILE)) as z:
      flat = {k: np.asarray(z[k], np.float32) for k in z.files}
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    raise ConfigError(f'{folder} is not a readable exported model ({e}); export it again with '
                      'python -m flax_cae.export.') from None
  if info.get('format') != FORMAT:
    raise ConfigError(f'{folder} is an exported model of format {info.get("format")}; this '
                      f'flax-cae reads format {FORMAT}: export it again with this version.')
  config, results = ConfigDict(info['config']), info['results']
  num_classes = (results.get('model_options') or {}).get('num_classes') or 10
  model = models.build_model(config.model, tuple(results['image_shape']), num_classes)
  variables = traverse_util.unflatten_dict(flat, sep='/')
  return trained_lib.Trained(folder, config, results, model, variables), info


def entropy_model_of(folder: str, weights_step: int | None = None):
  """The entropy model saved in a workdir or an exported folder, or None: also where it was
  fitted for other weights than those of checkpoint `weights_step` (a workdir read while a
  resumed run trains on), which it says."""
  path = os.path.join(folder, entropy.ENTROPY_FILE)
  if not os.path.isfile(path):
    return None
  model = entropy.EntropyModel.load(path)
  if None not in (weights_step, model.weights_step) and model.weights_step != weights_step:
    logging.warning('%s was fitted for the weights of step %d, not those of step %d read here: '
                    'it is not used (the run fits a new one at its end; python -m '
                    'flax_cae.export fits one now).', path, model.weights_step, weights_step)
    return None
  return model


def fit_entropy_model(trained: trained_lib.Trained, data_dir: str = ''):
  """The entropy model of a run that has none (one stopped before its end, or finished by
  an older flax-cae): fitted as a run's end fits it (training/entropy_fit.py), on the codes of
  the first entropy.fit_count images of its training split. Returns (model, images used)."""
  data = trained_lib.eval_data(trained, data_dir)
  source = sources.get_source(data.name, 'train', **pipeline.source_kwargs(data))
  n = entropy.fit_count(len(source), trained.results['image_shape'])
  codes = np.concatenate([
      np.asarray(trained.encode(trained.variables, sources.load_arrays(
          source, np.arange(i, min(i + CHUNK, n)))['image'])['latent'], np.float32)
      for i in range(0, n, CHUNK)])
  return entropy.fit_for(codes, trained.model, trained.variables,
                         learned=trained.task == 'rate_distortion',
                         weights_step=trained.results['best_step']), n
