"""What a run leaves in its workdir: metrics as JSON lines and TensorBoard events,
reconstruction grids as PNG, and the final results as JSON and Markdown.

Only process 0 writes (on many hosts every process computes the same numbers).
TensorBoard files come from tensorboardX, which needs no TensorFlow.
"""

import json
import math
import os

import jax
import numpy as np
from PIL import Image


def is_writer() -> bool:
  return jax.process_index() == 0


class MetricWriter:
  """Appends `{"step": s, "split": ..., **metrics}` to metrics.jsonl and TensorBoard."""

  def __init__(self, workdir: str):
    self.enabled = is_writer()
    if not self.enabled:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self.jsonl_path = os.path.join(workdir, 'metrics.jsonl')
    self.tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, split: str, metrics: dict):
    if not self.enabled:
      return
    record = {'step': int(step), 'split': split,
              **{k: _jsonable(v) for k, v in metrics.items()}}
    with open(self.jsonl_path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for k, v in metrics.items():
      if isinstance(v, (int, float)) and math.isfinite(v):
        self.tb.add_scalar(f'{split}/{k}', v, step)
    self.tb.flush()

  def image(self, step: int, tag: str, image: np.ndarray):
    if self.enabled:
      self.tb.add_image(tag, image, step, dataformats='HWC')
      self.tb.flush()

  def close(self):
    if self.enabled:
      self.tb.close()


def _jsonable(v):
  if isinstance(v, (np.generic, np.ndarray)):
    return v.item() if np.ndim(v) == 0 else v.tolist()
  return v


def reconstruction_grid(originals: np.ndarray, *rows: np.ndarray, min_size: int = 64) -> np.ndarray:
  """Originals (top row) over each of `rows` (reconstructions; for a denoiser, the noisy
  inputs then the outputs) as one uint8 RGB image.

  Inputs [n, H, W, C] in [0, 1]. Small images are enlarged by an integer factor
  (nearest neighbour) so that a 25x25 face or a 28x28 digit is visible on screen.
  """
  n, h, w, c = originals.shape
  rows = (originals, *rows)
  scale = max(1, math.ceil(min_size / max(h, w)))
  pad = 2
  grid = np.full((len(rows) * (h * scale + pad) + pad, n * (w * scale + pad) + pad, 3), 255,
                 np.uint8)
  for row, images in enumerate(rows):
    for i, im in enumerate(images):
      im = np.clip(np.asarray(im, np.float32), 0, 1)
      im = np.repeat(np.repeat(im, scale, 0), scale, 1)
      if c == 1:
        im = np.repeat(im, 3, axis=-1)
      y = pad + row * (h * scale + pad)
      x = pad + i * (w * scale + pad)
      grid[y:y + h * scale, x:x + w * scale] = np.round(im * 255).astype(np.uint8)
  return grid


def save_png(path: str, image: np.ndarray):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(image).save(path)


RESULT_COLUMNS = (  # 'SPLIT': the reported split (test, or validation where there is none)
    ('model', 'model'), ('data', 'data'), ('loss', 'loss'), ('SPLIT MSE', 'SPLIT_mse'),
    ('SPLIT PSNR (dB)', 'SPLIT_psnr'), ('SPLIT SSIM', 'SPLIT_ssim'),
    ('bottleneck floats', 'bottleneck_floats'), ('compression ratio', 'compression_ratio'),
    ('parameters', 'parameters'), ('training time (s)', 'train_seconds'),
    ('images/s', 'images_per_second'))
CLASSIFIER_COLUMNS = (
    ('model', 'model'), ('data', 'data'), ('SPLIT accuracy', 'SPLIT_accuracy'),
    ('SPLIT cross-entropy', 'SPLIT_cross_entropy'), ('parameters', 'parameters'),
    ('training time (s)', 'train_seconds'), ('images/s', 'images_per_second'))


def write_results(workdir: str, results: dict):
  """results.json (everything) and results.md (the headline table, one row)."""
  if not is_writer():
    return
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2, default=_jsonable)

  def fmt(v):
    if isinstance(v, float):
      return f'{v:.4f}' if abs(v) < 10 else f'{v:.2f}'
    return str(v)

  split = results.get('eval_split', 'test')
  classifier = results.get('task') == 'classification'
  columns = CLASSIFIER_COLUMNS if classifier else RESULT_COLUMNS
  header = '| ' + ' | '.join(name.replace('SPLIT', split) for name, _ in columns) + ' |'
  rule = '|' + '---|' * len(columns)
  row = '| ' + ' | '.join(fmt(results.get(key.replace('SPLIT', split), ''))
                          for _, key in columns) + ' |'
  metric = results.get('selection_metric')
  kept = (f"the best checkpoint by validation {metric} (step {results.get('best_step')})"
          if metric else f"the last model (step {results.get('best_step')}): no validation split")
  notes = (
      ('\nAccuracy: the share of images whose highest logit is their label. ' if classifier else
       '\nPSNR is the mean of per-image PSNRs (pixel range 1.0); SSIM is dm-pix\'s '
       '(11-tap Gaussian, sigma 1.5, valid filtering), mean of per-image values. ')
      + f'Metrics are on the {split} split'
      f"{' (the data set has no test split here)' if split != 'test' else ''}, with {kept}."
      f"\n\n{results.get('bottleneck_text', '')}\n")
  if results.get('codec_bpp') is not None:
    codec = results['codec']
    notes += (f"\nAs a codec ({codec['file']}; each {split} image coded alone, quantizer step "
              f"{codec['default_step']:g}): {results['codec_bpp']:.3f} bits per pixel as .fcae "
              f"files ({results['codec_bpp_payload']:.3f} without their header), PSNR "
              f"{results['codec_psnr']:.2f} dB, SSIM {results['codec_ssim']:.4f}.\n")
  if results.get('device'):
    notes += f"\n{results['device']}; commit {results.get('commit')}; {results.get('finished')}.\n"
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write('\n'.join([header, rule, row]) + '\n' + notes)
