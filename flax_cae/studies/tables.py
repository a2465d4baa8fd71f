"""A study's table: one row per member (mean and sample std over seeds) beside the
baselines' rows, written as study.md and study.csv; the tuning table likewise."""

import csv
import json
import math
import os

import numpy as np

from flax_cae import models
from flax_cae.runtime import machine
from flax_cae.training import run as run_lib
from flax_cae.runtime import writers


CSV_COLUMNS = ('member', 'x', 'seeds', 'test_psnr', 'test_psnr_std', 'test_ssim', 'test_ssim_std',
               'test_mse', 'test_mse_std', 'test_snr', 'test_snr_std', 'noise',
               'test_noisy_psnr', 'test_noisy_snr', 'test_kl', 'validation_psnr',
               'validation_psnr_std', 'final_validation_loss', 'bottleneck_floats',
               'compression_ratio', 'parameters', 'train_seconds', 'images_per_second',
               'learning_rate', 'learning_rate_tuned', 'accuracy_original',
               'accuracy_reconstruction', 'accuracy_ratio', 'diverged', 'note')


def _final_validation_loss(member_dir):
  path = os.path.join(member_dir, 'metrics.jsonl')
  if not os.path.isfile(path):
    return math.nan
  with open(path) as f:
    vals = [r for r in map(json.loads, f) if r.get('split') == 'validation']
  return vals[-1]['loss'] if vals else math.nan


def mean_std(values):
  values = [v for v in values if v is not None and math.isfinite(v)]
  if not values:
    return math.nan, math.nan
  return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)


def row(name, runs, tuned):
  """One table row from a member's runs [(results, workdir)] over seeds."""
  ok = [(r, d) for r, d in runs if r.get('diverged_at_step') is None]
  row = {'member': name, 'seeds': len(runs), 'diverged': len(runs) - len(ok),
         'workdirs': [d for _, d in runs]}
  for key in ('test_psnr', 'test_ssim', 'test_mse', 'test_snr', 'test_noisy_psnr',
              'test_noisy_snr', 'test_kl', 'validation_psnr'):
    row[key], row[f'{key}_std'] = mean_std([r.get(key) for r, _ in ok])
  row['final_validation_loss'] = mean_std([_final_validation_loss(d) for _, d in ok])[0]
  row['train_seconds'] = mean_std([r.get('train_seconds') for r, _ in ok])[0]
  row['images_per_second'] = mean_std([r.get('images_per_second') for r, _ in ok])[0]
  first = ok[0][0] if ok else {}
  for key in ('bottleneck_floats', 'compression_ratio', 'parameters', 'learning_rate',
              'input_floats', 'image_shape', 'model'):
    row[key] = first.get(key)
  row['learning_rate_tuned'] = tuned is not None
  row['note'] = ('not a compression' if row['compression_ratio'] and row['compression_ratio'] <= 1
                 else '')
  if row['diverged']:
    row['note'] = (row['note'] + '; ' if row['note'] else '') + f'{row["diverged"]} diverged'
  return row


def fmt(v, digits=2):
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return '–'
  if isinstance(v, bool):
    return 'yes' if v else ''
  if isinstance(v, float):
    return f'{v:.{digits}f}'
  return str(v)


def learning_rate_text(row) -> str:
  """A row's learning rate as the tables show it: '3e-04 (tuned)', or '' for baselines."""
  lr = row.get('learning_rate')
  if lr is None or (isinstance(lr, float) and math.isnan(lr)):
    return ''
  return f'{lr:g}' + (' (tuned)' if row.get('learning_rate_tuned') else '')


def _fmt_int(v):
  return '–' if v is None else f'{int(v):,}'


def _pm(row, key, digits):
  mean, std = row.get(key), row.get(f'{key}_std')
  if row.get('seeds', 1) > 1 and std is not None and not math.isnan(std):
    return f'{fmt(mean, digits)} ± {fmt(std, digits)}'
  return fmt(mean, digits)


def write_tables(workdir, study, rows, pca_rows, base, splits, classifier=None):
  with open(os.path.join(workdir, 'study.csv'), 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction='ignore')
    w.writeheader()
    for r in rows + pca_rows:
      w.writerow({k: r.get(k, '') for k in CSV_COLUMNS})
  x_name = study.x_axis.split('.')[-1] if study.x_axis else ''
  noisy = any(r.get('noise') for r in rows)
  vae = any(r.get('test_kl') is not None and math.isfinite(r['test_kl']) for r in rows)
  header = ('| member |' + (f' {x_name} |' if x_name else '')
            + (' noise | noisy input PSNR (dB) | noisy input SNR (dB) |' if noisy else '')
            + ' test PSNR (dB) | test SNR (dB) | test SSIM | test MSE |'
            + (' KL |' if vae else '') + ' val. PSNR (dB) | final val. loss | bottleneck floats '
            '| compression |' + (' classifier accuracy: originals | reconstructions | ratio |'
                                 if classifier else '')
            + ' parameters | train time (s) | images/s | learning rate | note |')
  lines = [f'# Study: {study.name}', '',
           f'Data: {base.data.name}, {"x".join(map(str, splits["train"].image_shape))}: '
           f'{splits["train"].n:,} train / {splits["validation"].n:,} validation / '
           f'{splits["test"].n:,} test images. Shared by every member '
           f'unless it overrides them: model {base.model.name}'
           f'{f" (latent {base.model.latent_dim})" if models.MODELS[base.model.name].latent_code else ""}, '
           f'loss {base.loss.name}, optimizer {base.optimizer.name} '
           f'(learning rate {base.optimizer.learning_rate:g}), batch {base.batch_size}, '
           f'{base.num_epochs} epochs. {study.num_seeds} seed(s) per member (mean ± sample std '
           f'over seeds). Device: {machine.device()}.', '',
           header, '|' + '---|' * header.count(' |')]
  for r in rows + pca_rows:
    ratio = r.get('compression_ratio')
    lines.append('| ' + ' | '.join([
        r['member'], *([fmt(r.get('x'))] if x_name else []),
        *([r.get('noise') or 'none', fmt(r.get('test_noisy_psnr')), fmt(r.get('test_noisy_snr'))]
          if noisy else []),
        _pm(r, 'test_psnr', 2), _pm(r, 'test_snr', 2), _pm(r, 'test_ssim', 4),
        _pm(r, 'test_mse', 5), *([fmt(r.get('test_kl'), 3)] if vae else []),
        _pm(r, 'validation_psnr', 2), fmt(r.get('final_validation_loss'), 5),
        fmt(r.get('bottleneck_floats')),
        '–' if not ratio else f'{ratio:.2f}x',
        *([fmt(r.get(k), 4) for k in ('accuracy_original', 'accuracy_reconstruction',
                                       'accuracy_ratio')] if classifier else []),
        _fmt_int(r.get('parameters')),
        fmt(r.get('train_seconds'), 0), fmt(r.get('images_per_second'), 0), learning_rate_text(r),
        r.get('note', '')]) + ' |')
  lines += ['', 'PSNR: mean of per-image PSNR (pixel range 1.0); SNR: mean of per-image '
            '10 log10(signal power / error power); SSIM: dm-pix (11-tap Gaussian, '
            'sigma 1.5, valid filtering), mean of per-image values; both on the test split with '
            f"each member's best checkpoint by validation {run_lib.selection_metric(base)}; val. PSNR: "
            "that checkpoint's PSNR on the validation split, the number to compare members by. PCA rows: the optimal linear code "
            'with as many floats as the bottleneck above it, fitted on the training split, '
            'scored on the same test images. "not a compression": the decoder receives at least '
            'as many floats as the image holds.', '']
  if noisy:
    lines[-1:-1] = [
        '', 'Denoising rows: the input is corrupted as the noise column says (the same noisy '
        'test images for every row: evaluation noise is a function of the image\'s index), the '
        'target is the clean image; "noisy input" scores the corrupted input itself. NL-means: '
        'scikit-image denoise_nl_means (patch 5, distance 6, fast mode, h = 0.8 sigma; sigma '
        'from the config for Gaussian noise, estimate_sigma otherwise) on the same noisy images.']
  if classifier is not None:
    c = classifier.results
    lines[-1:-1] = [
        '', f'Classifier: {c["model"]} ({classifier.workdir}), trained on the original training '
        f'images ({c.get("test_accuracy", c.get("validation_accuracy", math.nan)):.4f} '
        f'{c.get("eval_split", "test")} accuracy in its own run). Accuracy: the share of test '
        'images it labels correctly, on the originals and on each row\'s reconstructions (as '
        '8-bit images); ratio = reconstructions / originals (S2\'s "performance ratio").']
  with open(os.path.join(workdir, 'study.md'), 'w') as f:
    f.write('\n'.join(lines))


def write_tuning(workdir, chosen):
  if not writers.is_writer():
    return
  with open(os.path.join(workdir, 'tuning.csv'), 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['member', 'learning_rate', 'validation_psnr', 'chosen'])
    for name, (rate, tried) in chosen.items():
      for r, psnr in tried:
        w.writerow([name, r, psnr, r == rate])
  lines = ['| member | learning rates tried (validation PSNR, dB) | chosen |', '|---|---|---|']
  for name, (rate, tried) in chosen.items():
    cells = ', '.join(f'{r:g}: ' + ('diverged' if psnr == -math.inf else f'{psnr:.2f}')
                      for r, psnr in tried)
    lines.append(f'| {name} | {cells} | {rate:g} |')
  with open(os.path.join(workdir, 'tuning.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
