"""Looking at a trained autoencoder's latent space (S4): t-SNE maps, interpolations, snapshots.

  python -m flax_cae.visualize --workdir=DIR

For an autoencoder workdir (a VAE is mapped by its posterior mean) it writes DIR/visualize/
(or --out=FOLDER):

  tsne_2d.png, tsne_3d.png   scikit-learn's t-SNE of the codes of the first --max_points
                             images of the evaluation split, coloured by label
  interpolations.png         decodings of codes on the straight line between pairs of images
                             of different classes (8 steps; every part of the code mixed alike)
  snapshots.png              the reconstruction grids written at each evaluation during
                             training (reconstructions/step_*.png), stacked: how outputs evolved

A denoiser is shown the inputs it was trained for: the evaluation's noisy images.

It only reads the run (evaluate.load_trained): of a run still training, its best checkpoint so
far; nothing of the run's own files or checkpoints is written, cleaned or deleted.
"""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np

from flax_cae.evaluation import trained as evaluate_lib
from flax_cae.data import noise as noise_lib
from flax_cae.data import pipeline, sources
from flax_cae.runtime.errors import ConfigError, UserError

STEPS = 8          # images per interpolation strip, ends included
PAIRS = 4          # interpolation strips
MAX_SNAPSHOTS = 10


def _plt():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _inputs(trained, images_u8):
  """What the model sees of the first images of its split (noisy for a denoiser)."""
  noise = noise_lib.params(trained.config.data.get('noise') or {})
  if noise[0] == 'none':
    return jnp.asarray(images_u8, jnp.float32) / 255.0
  return jnp.asarray(noise_lib.noisy_split_images(images_u8, 0, noise))


def _codes(trained, x):
  """Code dict of float images x, in chunks."""
  encode = jax.jit(lambda v, x: trained.model.apply(v, x, method='encode'))
  parts = [encode(trained.variables, x[i:i + 500]) for i in range(0, len(x), 500)]
  return {k: jnp.concatenate([p[k] for p in parts]) for k in parts[0]}


def _flat(code):
  return np.concatenate([np.asarray(v, np.float32).reshape(len(v), -1) for v in code.values()], 1)


def visualize(workdir: str, max_points: int = 2000, data_dir: str = '', out: str = '') -> dict:
  """Writes WORKDIR/visualize/*.png, or OUT/*.png (module docstring); returns {name: path}."""
  check_max_points(max_points)
  trained = evaluate_lib.load_trained(workdir)
  if trained.task == 'classification':
    raise ConfigError(f'--workdir={trained.workdir} holds a classifier, which has no latent '
                      'space to show; give an autoencoder workdir.')
  data = evaluate_lib.eval_data(trained, data_dir)
  split_name, split = evaluate_lib.eval_split(trained, data_dir)
  n = min(max_points, split.n)
  if n < 5:
    raise ConfigError(f'the {split_name} split of {trained.workdir} holds {split.n} images; '
                      't-SNE needs at least 5.')
  arrays = sources.load_arrays(split.source, np.arange(n)) if not split.on_device else {
      'image': np.asarray(split.images[:n]), 'label': np.asarray(split.labels[:n])}
  images, labels = arrays['image'], arrays['label']
  names = _class_names(data, split_name)
  x = _inputs(trained, images)
  code = _codes(trained, x)
  out_dir = os.path.abspath(os.path.expanduser(out)) if out else os.path.join(trained.workdir,
                                                                             'visualize')
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise ConfigError(f'--out={out_dir} cannot be used ({e.strerror or e}); choose a folder you '
                      'can write to.') from None
  written = {}
  written.update(_tsne(out_dir, _flat(code), labels, names, trained))
  written['interpolations'] = _interpolations(out_dir, trained, code, x, labels, names)
  snapshots = _snapshots(out_dir, trained.workdir)
  if snapshots:
    written['snapshots'] = snapshots
  return written


def check_max_points(max_points, flag: str = '--max_points'):
  if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 5:
    raise ConfigError(f'{flag} must be an integer >= 5 (t-SNE needs at least 5 codes), '
                      f'got {max_points!r}; e.g. {flag}=2000.')


def _class_names(data, split_name):
  try:
    return sources.get_source(data.name, split_name, **pipeline.source_kwargs(data)).class_names
  except (UserError, AttributeError):
    return None


def _tsne(out_dir, features, labels, names, trained):
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
  plt = _plt()
  written = {}
  perplexity = float(min(30.0, (len(features) - 1) / 3))
  for dims in (2, 3):
    emb = TSNE(n_components=dims, init='pca', random_state=0, perplexity=perplexity
               ).fit_transform(features)
    fig = plt.figure(figsize=(7.5, 6.5))
    ax = fig.add_subplot(projection='3d' if dims == 3 else None)
    for c in np.unique(labels):
      sel = labels == c
      label = names[c] if names is not None and c < len(names) else str(c)
      ax.scatter(*emb[sel].T, s=6, label=label, color=plt.cm.tab10(int(c) % 10))
    ax.set_title(f'{trained.config.model.name}: t-SNE ({dims}-D) of {len(features)} test codes '
                 f'({features.shape[1]} floats each)', fontsize=9)
    ax.legend(fontsize=7, markerscale=2, loc='best')
    fig.tight_layout()
    path = os.path.join(out_dir, f'tsne_{dims}d.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written[f'tsne_{dims}d'] = path
  return written


def _pairs(labels, k):
  """Up to k pairs (i, j) of images of different classes, the first in order."""
  pairs, used = [], set()
  for i in range(len(labels)):
    if i in used:
      continue
    j = next((j for j in range(i + 1, len(labels)) if labels[j] != labels[i] and j not in used),
             None)
    if j is not None:
      pairs.append((i, j))
      used.update((i, j))
    if len(pairs) == k:
      break
  return pairs


def _interpolations(out_dir, trained, code, x, labels, names):
  plt = _plt()
  decode = jax.jit(lambda v, c: trained.model.apply(v, c, method='decode'))
  pairs = _pairs(labels, PAIRS)
  t = jnp.linspace(0.0, 1.0, STEPS)
  fig, axes = plt.subplots(len(pairs), STEPS + 2, figsize=(1.1 * (STEPS + 2), 1.2 * len(pairs)),
                           squeeze=False)
  for row, (i, j) in enumerate(pairs):
    mixed = {k: (1 - t.reshape(-1, *[1] * (v.ndim - 1))) * v[i] + t.reshape(
        -1, *[1] * (v.ndim - 1)) * v[j] for k, v in code.items()}
    strip = np.asarray(decode(trained.variables, mixed))
    cells = [np.asarray(x[i])] + list(strip) + [np.asarray(x[j])]
    for col, im in enumerate(cells):
      ax = axes[row, col]
      im = np.clip(im, 0, 1)
      ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap='gray', vmin=0, vmax=1)
      ax.set_xticks([])
      ax.set_yticks([])
    name = (lambda c: names[c] if names is not None and c < len(names) else str(c))
    axes[row, 0].set_ylabel(f'{name(labels[i])} → {name(labels[j])}', rotation=0, ha='right',
                            va='center', fontsize=7)
  axes[0, 0].set_title('input', fontsize=7)
  axes[0, -1].set_title('input', fontsize=7)
  fig.tight_layout()
  path = os.path.join(out_dir, 'interpolations.png')
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _snapshots(out_dir, workdir):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(workdir, 'reconstructions', 'step_*.png')))
  if not files:
    return None
  if len(files) > MAX_SNAPSHOTS:
    files = [files[int(round(i))] for i in np.linspace(0, len(files) - 1, MAX_SNAPSHOTS)]
  plt = _plt()
  grids = [np.asarray(Image.open(f).convert('RGB')) for f in files]
  fig, axes = plt.subplots(len(grids), 1, figsize=(grids[0].shape[1] / 80 + 1.5,
                                                   len(grids) * (grids[0].shape[0] / 80 + 0.2)),
                           squeeze=False)
  for ax, grid, f in zip(axes[:, 0], grids, files):
    ax.imshow(grid)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(f'step {int(os.path.basename(f)[5:13])}', rotation=0, ha='right', va='center',
                  fontsize=8)
  fig.tight_layout()
  path = os.path.join(out_dir, 'snapshots.png')
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
