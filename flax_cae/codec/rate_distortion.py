"""Compression in bytes: every trained code, PCA and the classical codecs as
points of PSNR against bits per pixel, decoded from real bitstreams.

- An autoencoder's code (and PCA's, at the same floats): per channel a uniform quantizer
  whose step is `frac` x that channel's standard deviation on the training codes, one
  point per frac (study.evals.rate_distortion.steps); the probability tables are fitted on the training codes
  (flax_cae.codec.bitstream.CodeModel), each test image is coded alone, its reconstruction is
  decoded from those bytes.
- A learned codec (balle2017): its rounded code, coded with its own learned density as a
  table over the integers its training codes reach (one point per member: its lambda).
- JPEG and WebP (flax_cae.codec.classical) over study.evals.rate_distortion.qualities: the file's bytes, and the
  payload without the parts every file of that size and quality shares.

bpp = 8 x bytes / (height x width). The BD-rate (Bjontegaard) of a curve against another is
the mean difference of log-rate at equal PSNR over the PSNR range both cover, as a percent:
negative means fewer bytes for the same PSNR.
"""

import csv
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from flax_cae.codec import bitstream
from flax_cae.codec import classical as codecs
from flax_cae.codec import entropy
from flax_cae.data import pipeline

CHUNK = 500
MATCHED_BPP = (0.5, 1.0, 2.0, 4.0)


def split_images(split: pipeline.Split, n: int | None = None) -> np.ndarray:
  """The first n (all) images of a split as host uint8 [N, H, W, C]."""
  n = split.n if n is None else min(n, split.n)
  if split.on_device:
    return np.asarray(jax.device_get(split.images))[:n]
  return split.host_batch(np.arange(n))


def _in_chunks(fn, x, size=CHUNK):
  return np.concatenate([np.asarray(fn(x[i:i + size])) for i in range(0, len(x), size)])


def _coded(model: bitstream.CodeModel, codes: np.ndarray, decode, test_u8) -> tuple:
  """(bpp, PSNR, SSIM) of the test images: each code quantized, coded alone, decoded from
  its bytes and reconstructed."""
  streams, decoded = entropy.code_images(model, codes)
  psnr, ssim = entropy.mean_scores(_in_chunks(decode, decoded), test_u8)
  return 8 * np.mean([len(s) for s in streams]) / (test_u8.shape[1] * test_u8.shape[2]), psnr, ssim


def code_points(name: str, encode, decode, train_u8, test_u8, fracs, note='',
                save_dir: str = '') -> list[dict]:
  """Points of a code: encode(uint8 [B, ...]) -> float codes [B, ..., C]; decode(codes) ->
  float images. One point per quantizer step fraction; everything decoded from bytes. Each
  fitted CodeModel (steps and tables) is saved to save_dir/code_model_step<frac>.npz."""
  fit_codes = _in_chunks(encode, train_u8[:entropy.FIT_IMAGES])
  test_codes = _in_chunks(encode, test_u8)
  fitted = entropy.fit(fit_codes, steps=tuple(fracs))
  points = []
  for frac in fracs:
    model = fitted.table(frac)
    _save(model, save_dir, f'code_model_step{frac:g}.npz')
    bpp, psnr, ssim = _coded(model, test_codes, decode, test_u8)
    points.append({'method': name, 'setting': f'step {frac:g} std', 'bpp': bpp,
                   'bpp_payload': bpp, 'psnr': psnr, 'ssim': ssim, 'note': note})
    logging.info('Rate-distortion: %s step %g std: %.3f bpp, %.2f dB.', name, frac, bpp, psnr)
  return points


def _save(model: bitstream.CodeModel, save_dir: str, name: str):
  if save_dir:
    os.makedirs(save_dir, exist_ok=True)
    model.save(os.path.join(save_dir, name))


def codec_points(model_name, trained, train_u8, test_u8, save_dir: str = '') -> dict:
  """One point of a learned codec: its rounded code, coded with its learned density
  (saved to save_dir/code_model.npz)."""
  def encode(x):
    return trained.encode(trained.variables, x)['latent']

  def decode(y):
    return trained.decode(trained.variables, {'latent': jnp.asarray(y)})

  model = entropy.fit_for(_in_chunks(encode, train_u8[:entropy.FIT_IMAGES]), trained.model,
                         trained.variables, learned=True).table(1.0)
  _save(model, save_dir, 'code_model.npz')
  bpp, psnr, ssim = _coded(model, np.round(_in_chunks(encode, test_u8)), decode, test_u8)
  lam = trained.config.loss.get('rd_lambda')
  return {'method': model_name, 'setting': f'lambda {lam:g}', 'bpp': bpp, 'bpp_payload': bpp,
          'psnr': psnr, 'ssim': ssim, 'note': 'learned density'}


def classical_points(test_u8, qualities) -> list[dict]:
  pixels = test_u8.shape[1] * test_u8.shape[2]
  points = []
  for codec in codecs.CODECS:
    for q in qualities:
      decoded, sizes, payloads = codecs.run(codec, test_u8, q)
      psnr, ssim = entropy.mean_scores(decoded.astype(np.float32) / 255.0, test_u8)
      points.append({'method': codec.upper() if codec == 'jpeg' else 'WebP',
                     'setting': f'quality {q}', 'bpp': 8 * sizes.mean() / pixels,
                     'bpp_payload': 8 * payloads.mean() / pixels, 'psnr': psnr, 'ssim': ssim,
                     'note': 'Pillow'})
  return points


def bd_rate(rate_a, psnr_a, rate_b, psnr_b) -> float:
  """Bjontegaard delta rate of curve b against curve a (percent; negative: b needs fewer
  bits at equal PSNR): log-rate fitted as a polynomial of PSNR (cubic with 4+ points),
  integrated over the PSNR range both curves cover. NaN where they do not overlap."""
  if min(len(rate_a), len(rate_b)) < 2:
    return math.nan
  lo, hi = max(min(psnr_a), min(psnr_b)), min(max(psnr_a), max(psnr_b))
  if not hi > lo:
    return math.nan
  integrals = []
  for r, p in ((rate_a, psnr_a), (rate_b, psnr_b)):
    fit = np.polyfit(p, np.log(r), min(3, len(r) - 1))
    prim = np.polyint(fit)
    integrals.append((np.polyval(prim, hi) - np.polyval(prim, lo)) / (hi - lo))
  return float((math.exp(integrals[1] - integrals[0]) - 1) * 100)


def psnr_at(points, bpp, key='bpp') -> float:
  """A curve's PSNR at `bpp`, interpolated linearly in log-rate; NaN outside its range."""
  pts = sorted((p[key], p['psnr']) for p in points)
  rates = [r for r, _ in pts]
  if not pts or bpp < rates[0] or bpp > rates[-1]:
    return math.nan
  return float(np.interp(math.log(bpp), np.log(rates), [p for _, p in pts]))


def curves(points) -> dict:
  out = {}
  for p in points:
    out.setdefault(p['method'], []).append(p)
  return out


def write(workdir: str, points: list[dict], image_shape, n_test: int, device: str):
  """rate_distortion.csv / .md (every point, PSNR at matched rates, BD-rates against JPEG
  and WebP) and rate_distortion.png."""
  with open(os.path.join(workdir, 'rate_distortion.csv'), 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=('method', 'setting', 'bpp', 'bpp_payload', 'psnr', 'ssim',
                                      'note'))
    w.writeheader()
    for p in points:
      w.writerow(p)
  by = curves(points)
  classical = {m: by[m] for m in ('JPEG', 'WebP') if m in by}
  learned = [m for m in by if m not in classical]
  lines = ['# Rate-distortion', '',
           f'{n_test:,} test images of {"x".join(map(str, image_shape))}, each coded alone. '
           f'Device: {device}.', '',
           '| method | setting | bpp (file) | bpp (shared header) | PSNR (dB) | SSIM | note |',
           '|---|---|---|---|---|---|---|']
  for p in points:
    lines.append(f"| {p['method']} | {p['setting']} | {p['bpp']:.3f} | {p['bpp_payload']:.3f} | "
                 f"{p['psnr']:.2f} | {p['ssim']:.4f} | {p['note']} |")
  lines += ['', '## PSNR (dB) at matched rates', '',
            '| method | ' + ' | '.join(f'{b:g} bpp' for b in MATCHED_BPP) + ' |',
            '|---|' + '---|' * len(MATCHED_BPP)]
  for m, pts in by.items():
    lines.append(f'| {m} | ' + ' | '.join(
        '–' if math.isnan(v := psnr_at(pts, b)) else f'{v:.2f}' for b in MATCHED_BPP) + ' |')
    if m in classical:
      lines.append(f'| {m} (shared header) | ' + ' | '.join(
          '–' if math.isnan(v := psnr_at(pts, b, 'bpp_payload')) else f'{v:.2f}'
          for b in MATCHED_BPP) + ' |')
  heads = [f'vs {c} (files)' for c in classical] + [f'vs {c} (shared header)' for c in classical]
  lines += ['', '## BD-rate (%, negative = fewer bytes for the same PSNR)', '',
            '| method | ' + ' | '.join(heads) + ' |', '|---|' + '---|' * len(heads)]
  for m in learned:
    cells = []
    for key in ('bpp', 'bpp_payload'):
      for c, ref in classical.items():
        v = bd_rate([p[key] for p in ref], [p['psnr'] for p in ref],
                    [p['bpp'] for p in by[m]], [p['psnr'] for p in by[m]])
        cells.append('– (no overlap)' if math.isnan(v) else f'{v:+.1f}')
    lines.append(f'| {m} | ' + ' | '.join(cells) + ' |')
  lines += ['', 'bpp = 8 x bytes / pixels of one image; "file": everything a decoder reads '
            'to decode that image alone (for learned codes and PCA: the range coder\'s stream; '
            'the quantizer steps and probability tables are fixed per model, like a codec\'s); '
            '"shared header": JPEG\'s scan only, WebP less its RIFF/VP8 headers (the parts every '
            'file of that size and quality shares). PSNR and SSIM as in study.md. BD-rate: '
            'Bjontegaard, log-rate as a cubic in PSNR over the common PSNR range.', '']
  with open(os.path.join(workdir, 'rate_distortion.md'), 'w') as f:
    f.write('\n'.join(lines))

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
  for ax, metric, label in ((axes[0], 'psnr', 'PSNR (dB)'), (axes[1], 'ssim', 'SSIM')):
    for i, (m, pts) in enumerate(by.items()):
      pts = sorted(pts, key=lambda p: p['bpp'])
      ax.plot([p['bpp'] for p in pts], [p[metric] for p in pts], 'o-', color=f'C{i}', label=m)
      if m in classical:
        pts = sorted(pts, key=lambda p: p['bpp_payload'])
        ax.plot([p['bpp_payload'] for p in pts], [p[metric] for p in pts], 'o--', color=f'C{i}',
                alpha=0.6, label=f'{m} (shared header)')
    ax.set_xscale('log')
    ax.set_xlabel('bits per pixel (log)')
    ax.set_ylabel(label)
    ax.grid(alpha=0.3, which='both')
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'rate_distortion.png'), dpi=110)
  plt.close(fig)
