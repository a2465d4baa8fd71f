"""A study's figures (matplotlib, PNG): PSNR and SSIM bars, validation curves, one grid of
reconstructions, loss against training time, and with study.x_axis the curves against it
and each member's original, code and output."""

import json
import math
import os

import numpy as np

from flax_cae.data import pipeline
from flax_cae.studies import members as members_lib
from flax_cae.studies import tables


def write_figures(workdir, rows, pca_rows, pca_images, n_images):
  """psnr_ssim.png (bars, baselines as lines), validation_psnr.png, loss_vs_time.png and
  reconstructions.png."""
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
  _write_curves(workdir, rows)
  _write_grid(workdir, rows, pca_images, n_images)


def _write_curves(workdir, rows):
  """Validation PSNR against steps, and (S3) training loss against training seconds
  (evaluation excluded), of every member."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

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


def _write_grid(workdir, rows, pca_images, n_images):
  """The first test images, then each member's and each PCA size's reconstructions."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

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

  first = pipeline.first_images(split, n_images)
  n = min(3, n_images, split.n)
  strips = []  # (member label, [(title, image)])
  for r in rows:
    ae = members_lib.loaded(r['workdirs'][0])
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
    strips.append((f'{r["member"]}\n{x_name} {tables.fmt(r.get("x"))}', cells))
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
