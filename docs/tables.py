"""The documentation's result tables, written from the committed records they report.

Every table of results in README.md and docs/ sits between two markers,

  <!-- table NAME: written by docs/tables.py -->
  | ... |
  <!-- end of table -->

and is written by the function NAME below from record files: a run's own results.json,
config.json and evaluation curve (docs/records/<run>/), a study's CSV (docs/studies/), a
benchmark's CSV (benchmarks/results/). Nothing in a table is typed by hand.

  python docs/tables.py           # rewrite every marked table from its records
  python docs/tables.py --check   # exit 1, naming each table that differs from its records
  python docs/tables.py --record=WORKDIR --name=NAME   # copy a run's record to docs/records/NAME
"""

import argparse
import csv
import difflib
import json
import math
import pathlib
import re
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / 'docs'
RECORDS = DOCS / 'records'
STUDIES = DOCS / 'studies'
BENCH = ROOT / 'benchmarks' / 'results'

MARKER = re.compile(r'<!-- table (?P<name>[\w-]+): written by docs/tables.py -->\n'
                    r'(?P<body>.*?)<!-- end of table -->', re.S)


def pages() -> list[pathlib.Path]:
  """Every page a table may sit on: the README and the site's pages."""
  return [ROOT / 'README.md'] + sorted(DOCS.rglob('*.md'))


# --- reading records -------------------------------------------------------------------


def read_csv(path: pathlib.Path) -> list[dict]:
  with open(path, newline='') as f:
    return [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _value(text):
  if text in ('', None):
    return None
  try:
    return int(text)
  except ValueError:
    pass
  try:
    return float(text)
  except ValueError:
    return {'True': True, 'False': False}.get(text, text)


def rows_by(path: pathlib.Path, key: str = 'member') -> dict[str, dict]:
  return {r[key]: r for r in read_csv(path)}


def run(name: str) -> dict:
  """A run's results.json, as the run wrote it (docs/records/NAME/results.json)."""
  return json.loads((RECORDS / name / 'results.json').read_text())


def curve(name: str, key: str = 'psnr', split: str = 'validation') -> list[tuple[int, float]]:
  """(step, value) at each evaluation of a recorded run."""
  return [(r['step'], r[key]) for r in read_csv(RECORDS / name / 'evaluations.csv')
          if r['split'] == split]


def study_csv(name: str) -> dict[str, dict]:
  return rows_by(STUDIES / f'{name}.csv')


def bench_csv(name: str) -> list[dict]:
  return read_csv(BENCH / f'{name}.csv')


# --- formatting --------------------------------------------------------------------------


def missing(v) -> bool:
  return v is None or (isinstance(v, float) and math.isnan(v))


def num(v, spec: str = '.2f', dash: str = '–') -> str:
  return dash if missing(v) else format(v, spec)


def pct(v, digits: int = 1) -> str:
  return '–' if missing(v) else f'{v:+.{digits}f} %'.replace('+-', '-')


def table(header: list[str], rows: list[list[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
  return '\n'.join(lines) + '\n'


def csv_table(rows: list[dict], columns: list[tuple[str, str, str]], dash: str = '–') -> str:
  """A table of `rows` with (header, key, format spec) columns; a spec of 's' prints as is."""
  return table([h for h, _, _ in columns],
               [[(dash if missing(r.get(k)) else str(r[k])) if spec == 's'
                 else num(r.get(k), spec, dash) for _, k, spec in columns] for r in rows])


TABLES = {}


def register(fn):
  TABLES[fn.__name__.replace('_', '-')] = fn
  return fn


# --- the study pages ---------------------------------------------------------------------

S1_COLUMNS = ['member', 'test PSNR (dB)', 'test SSIM', 'test MSE', 'final val. loss',
              'bottleneck floats', 'compression', 'parameters', 'train time (s)', 'images/s',
              'learning rate', 'note']


def _lr(r):
  from flax_cae.studies import tables  # pylint: disable=import-outside-toplevel
  return tables.learning_rate_text(r)


def _s1(name):
  rows = study_csv(name).values()
  return table(S1_COLUMNS, [[
      r['member'], num(r['test_psnr']), num(r['test_ssim'], '.4f'), num(r['test_mse'], '.5f'),
      num(r.get('final_validation_loss'), '.5f'), str(r['bottleneck_floats']),
      num(r['compression_ratio'], '.2f') + 'x', num(r['parameters'], ','),
      num(r.get('train_seconds'), '.0f'), num(r.get('images_per_second'), '.0f'), _lr(r),
      r.get('note') or ''] for r in rows])


@register
def s1_architectures():
  return _s1('s1_architectures')


@register
def s1_losses():
  return _s1('s1_losses')


@register
def s1_optimizers():
  return _s1('s1_optimizers')


@register
def s1_tuning():
  """The study's own tuning table (it writes no CSV of it): its Markdown, as written."""
  return (STUDIES / 's1_optimizers_tuning.md').read_text()


@register
def s2_compression_rate():
  rows = []
  for r in study_csv('s2_compression_rate').values():
    ratio = num(r['compression_ratio'], '.2f') + 'x'
    if r.get('note') == 'not a compression':
      ratio += ' (not a compression)'
    rows.append([r['member'], num(r['x'], 'g'), num(r['test_psnr']), num(r['test_ssim'], '.4f'),
                 str(r['bottleneck_floats']), ratio, num(r['accuracy_reconstruction'], '.4f'),
                 num(r['accuracy_ratio'], '.3f')])
  return table(['member', 'rate', 'test PSNR (dB)', 'test SSIM', 'bottleneck floats',
                'compression', 'accuracy on reconstructions', 'ratio'], rows)


def _noise(text):
  if not text:
    return '–'
  kind, _, sigma = text.partition(' sigma ')
  return f'{kind.capitalize()} {sigma}'


@register
def s3_faces():
  rows = []
  for r in study_csv('s3_faces').values():
    noisy = (f'{num(r["test_noisy_psnr"])} / {num(r["test_noisy_snr"])}'
             if r.get('noise') else '–')
    rows.append([r['member'], _noise(r.get('noise')), noisy, num(r['test_psnr']),
                 num(r['test_snr']), num(r['test_ssim'], '.3f'),
                 num(r.get('train_seconds'), '.0f')])
  return table(['member', 'noise', 'noisy input PSNR / SNR (dB)', 'test PSNR (dB)',
                'test SNR (dB)', 'test SSIM', 'train time (s)'], rows)


# S4's own numbers (Table 1 of the paper), quoted beside flax-cae's.
S4_REPORTED = {'ae': '10.27 dB / 0.003709', 'ae_dropout_bn': '7.08 dB / 0.008330 (dropout)'}


@register
def s4_colored_mnist():
  rows = study_csv('s4_colored_mnist')
  first = next(iter(rows.values()))
  out = [[f'noisy input ({_noise(first["noise"]).lower().replace("gaussian ", "sigma ")})',
          num(first['test_noisy_snr']), '–', num(first['test_noisy_psnr']), '–', '–', '–']]
  for name, r in rows.items():
    if name.startswith('PCA'):
      continue
    label = f'{name} (latent {r["bottleneck_floats"]})' if not missing(r.get('test_kl')) else name
    out.append([label, num(r['test_snr']), num(r['test_mse'], '.5f'), num(r['test_psnr']),
                num(r['test_ssim'], '.3f'), num(r.get('test_kl')), S4_REPORTED.get(name, '–')])
  return table(['member', 'test SNR (dB)', 'test MSE', 'test PSNR (dB)', 'test SSIM', 'KL',
                'S4 reported'], out)


# --- compression in bytes ----------------------------------------------------------------


def rd_points(name: str) -> dict[str, list[dict]]:
  """A rate-distortion record's points by method, in the record's order."""
  out = {}
  for r in read_csv(STUDIES / f'{name}.csv'):
    out.setdefault(r['method'], []).append(r)
  return out


def bd(points, method, anchor, key='bpp') -> float:
  """BD-rate (%) of `method`'s curve against `anchor`'s, rates read from `key`."""
  from flax_cae.codec import rate_distortion  # pylint: disable=import-outside-toplevel
  a, b = points[anchor], points[method]
  return rate_distortion.bd_rate([p[key] for p in a], [p['psnr'] for p in a],
                                 [p[key] for p in b], [p['psnr'] for p in b])


def point(points, method, setting) -> dict:
  return next(p for p in points[method] if p['setting'] == setting)


def _label(method, setting):
  short = {'PCA (256 floats)': 'PCA-256', 'PCA (64 floats)': 'PCA-64'}.get(method, method)
  if method in ('JPEG', 'WebP'):
    return f'{method} q{setting.split()[-1]}'
  if method == 'balle2017':
    return f'Ballé λ {setting.split()[-1]}, 4 epochs'
  return f'{short}, {setting}'


@register
def rd_cifar10():
  pts = rd_points('rd_cifar10')
  chosen = [('best256', s) for s in ('step 1 std', 'step 0.5 std', 'step 0.25 std',
                                     'step 0.125 std')]
  chosen += [('PCA (256 floats)', 'step 0.5 std'), ('PCA (256 floats)', 'step 0.25 std')]
  chosen += [('WebP', f'quality {q}') for q in (5, 10, 20, 50)]
  chosen += [('JPEG', f'quality {q}') for q in (10, 20)]
  return table(['method', 'bpp (file)', 'bpp (shared header)', 'PSNR (dB)'], [
      [_label(m, st), num(p['bpp'], '.3f'), num(p['bpp_payload'], '.3f'), num(p['psnr'])]
      for m, st in chosen for p in [point(pts, m, st)]])


@register
def rd_cifar10_bd():
  pts = rd_points('rd_cifar10')
  rows = []
  for method, label in (('best256', 'best256'), ('PCA (256 floats)',
                                                 'PCA-256, coded the same way')):
    rows.append([label, pct(bd(pts, method, 'WebP')), pct(bd(pts, method, 'WebP', 'bpp_payload')),
                 pct(bd(pts, method, 'JPEG')), pct(bd(pts, method, 'JPEG', 'bpp_payload'))])
  return table(['code', 'vs WebP files', 'vs WebP, headers shared', 'vs JPEG files',
                "vs JPEG's scan alone"], rows)


@register
def rd_balle():
  pts = rd_points('rd_cifar10_balle')
  chosen = [('balle2017', p['setting']) for p in pts['balle2017']]
  chosen += [('best64', 'step 0.125 std'), ('PCA (64 floats)', 'step 0.125 std'),
             ('WebP', 'quality 20')]
  label = {'best64': 'best64 (4x4x4, no blocks), step 0.125 std'}
  return table(['method', 'bpp (file)', 'PSNR (dB)', 'SSIM'], [
      [label.get(m, _label(m, st)), num(p['bpp'], '.3f'), num(p['psnr']), num(p['ssim'], '.3f')]
      for m, st in chosen for p in [point(pts, m, st)]])


STEPS = ('step 1 std', 'step 0.5 std', 'step 0.25 std', 'step 0.125 std')


@register
def rd_best64():
  dense, spatial = rd_points('rd_cifar10_best64'), rd_points('rd_cifar10_balle')
  pca = [point(dense, 'PCA (64 floats)', st)['psnr'] for st in STEPS]
  rows = []
  for label, pts, method in (('dense, flips and shifts, `neg_psnr`', dense, 'best64'),
                             ('4x4x4, no blocks (previous section)', spatial, 'best64'),
                             ('PCA-64, coded the same way', dense, 'PCA (64 floats)')):
    psnr = [point(pts, method, st)['psnr'] for st in STEPS]
    gain = ' / '.join(f'{a - b:+.2f}' for a, b in zip(psnr, pca))
    rows.append([label, ' / '.join(f'{v:.2f}' for v in psnr),
                 '–' if method.startswith('PCA') else gain,
                 pct(bd(pts, method, 'JPEG', 'bpp_payload'))])
  return table(['64-float code', 'PSNR at step 1 / 0.5 / 0.25 / 0.125 std (dB)',
                'over PCA-64 at the same step (dB)', "BD-rate vs JPEG's scan alone"], rows)


# --- codes better than PCA -----------------------------------------------------------------


def config_of(name: str) -> dict:
  return json.loads((RECORDS / name / 'config.json').read_text())


def epochs_curve(name: str, key: str = 'psnr') -> list[tuple[float, float]]:
  """(epoch, validation value) at each evaluation of a recorded run."""
  r, c = run(name), config_of(name)
  steps_per_epoch = r['total_steps'] / c['num_epochs']
  return [(step / steps_per_epoch, v) for step, v in curve(name, key)]


@register
def best_codes():
  pca = rows_by(RECORDS / 'best_codes' / 'study.csv')['PCA (256 floats)']
  rows = []
  for name, code in (('cifar10_best256', '8x8x4 spatial, 256 floats'),
                     ('cifar10_improved', 'one dense vector, 256 floats (S1\'s ImprovedCAE)')):
    r, c = run(name), config_of(name)
    bold = '**' if name == 'cifar10_best256' else ''
    rows.append([f'`{name}`', code, f'{r["parameters"]:,}', str(c['num_epochs']),
                 f'{bold}{r["test_psnr"]:.2f}{bold}', f'{bold}{r["test_ssim"]:.3f}{bold}',
                 f'{pca["test_psnr"]:.2f} / {pca["test_ssim"]:.3f}',
                 f'{r["test_psnr"] - pca["test_psnr"]:+.2f} dB'])
  return table(['config', 'code', 'parameters', 'epochs', 'test PSNR (dB)', 'test SSIM',
                'PCA, same floats: PSNR (dB) / SSIM', 'over PCA'], rows)


@register
def best256_curve():
  points = epochs_curve('cifar10_best256')
  ssim = epochs_curve('cifar10_best256', 'ssim')
  return table(['epoch'] + [f'{e:g}' for e, _ in points],
               [['validation PSNR (dB)'] + [f'{v:.2f}' for _, v in points],
                ['validation SSIM'] + [f'{v:.3f}' for _, v in ssim]])


LEVERS = {
    'best256': 'none (the recipe: one block at 8x8)',
    'no_blocks': 'no residual block',
    'res_blocks': 'one residual block per stage',
    'wider': 'wider (48, 96, 192)',
    'half_width': 'half width (16, 32, 64)',
    'silu': 'SiLU instead of GELU',
    'relu': 'ReLU instead of GELU',
    'batch_norm': 'BatchNorm',
    'group_norm': 'GroupNorm (32 groups)',
    'no_weight_decay': 'no weight decay',
    'weight_decay_1e-2': 'weight decay 1e-2 (from 1e-4)',
    'constant_lr': 'constant learning rate (no warm-up, no cosine)',
    'l1': 'L1 loss',
    'mse_ssim': 'MSE + SSIM loss',
    'neg_psnr': 'loss `neg_psnr` (-10 log10 MSE per image)',
    'ema': 'EMA of the parameters (0.999)',
    'flip': 'random left-right flips',
    'flip_crop': 'flips and shifts of up to 4 pixels',
    'bfloat16': 'bfloat16 compute',
}


@register
def best_levers():
  rows = {n: r for n, r in rows_by(RECORDS / 'best_levers' / 'study.csv').items()
          if not n.startswith('PCA')}
  base = rows['best256']
  out = []
  for name, r in rows.items():
    bold = '**' if r['validation_psnr'] > base['validation_psnr'] + 0.5 else ''
    gain = round(r['validation_psnr'], 2) - round(base['validation_psnr'], 2)  # as shown
    out.append([LEVERS[name], f'{bold}{r["validation_psnr"]:.2f}{bold}',
                '–' if name == 'best256' else f'{gain:+.2f}' if round(gain, 2) else '0.00',
                f'{r["images_per_second"]:,.0f}',
                f'{r["images_per_second"] / base["images_per_second"]:.2f}x',
                f'{r["parameters"]:,}'])
  return table(['change from the recipe', 'validation PSNR (dB)', 'vs recipe', 'train img/s',
                'vs recipe', 'parameters'], out)


# --- the codec page ------------------------------------------------------------------------

ASTRONAUT = {'cifar10_best256': 'the whole image, padded to a multiple of 4',
             'cifar10_improved': '256 tiles of 32x32'}


@register
def astronaut():
  rows = []
  for name, how in ASTRONAUT.items():
    for r in read_csv(RECORDS / 'astronaut' / f'{name}.csv'):
      label = (f'flax-cae `{name}` ({how})' if r['codec'].startswith('flax-cae')
               else f'{r["codec"].split()[0]} quality {r["quality"]}, at most `{name}`\'s bytes')
      rows.append([label, f'{r["bytes"]:,}', f'{r["bpp"]:.3f}', f'{r["psnr"]:.2f}'])
  return table(['codec', 'bytes', 'bpp', 'PSNR (dB)'], rows)


# --- the README ----------------------------------------------------------------------------

ZOO = ROOT / 'flax_cae' / 'zoo'


def shipped(name: str) -> dict:
  return json.loads((ZOO / name / 'model.json').read_text())


def _one_digit(d: float) -> str:
  """A small difference to its first significant digit: -0.00002, +0.003."""
  places = max(0, -math.floor(math.log10(abs(d)))) if d else 0
  return f'{d:+.{places}f}'


SHIPPED = {  # what the numbers cannot say
    'cifar10_best256': ('`res_cae`, one residual block at 8x8, 60 epochs',
                        'CIFAR-10 training JPEGs: 40,000 / 5,000 / 5,000',
                        '256 floats (8x8x4, fully convolutional)'),
    'cifar10_improved': ('S1 ImprovedCAE, 30 epochs', 'the same', '256 floats (dense)'),
}


@register
def readme_shipped():
  rows = []
  for name, (model, data, code) in SHIPPED.items():
    m = shipped(name)
    scores = m['split']['scores_by_dtype']
    s = scores[m['dtype']]
    weights = m['dtype']
    if m['dtype'] != 'float32':
      weights += (f' (test PSNR {_one_digit(s["psnr"] - scores["float32"]["psnr"])} dB against '
                  'float32)')
    weights += f', {(ZOO / name / "variables.npz").stat().st_size / 1e6:.1f} MB'
    rows.append([f'`{name}`', model, data, code, f'{s["psnr"]:.2f} dB / {s["ssim"]:.3f}',
                 f'{s["codec_bpp"]:.3f} bpp, {s["codec_psnr"]:.2f} dB', weights])
  return table(['name', 'model', 'data', 'code', 'test PSNR / SSIM', 'codec (default step)',
                'weights'], rows)


def _psnr_ssim(r, ssim='test_ssim'):
  return f'{r["test_psnr"]:.2f} dB / SSIM {r[ssim]:.3f}'


@register
def readme_results():
  pca5000 = rows_by(RECORDS / 'best_codes' / 'study.csv')['PCA (256 floats)']
  improved, best256 = run('cifar10_improved'), run('cifar10_best256')
  arch, losses, optim = (study_csv(f's1_{n}') for n in ('architectures', 'losses', 'optimizers'))
  best_optim = max((r for n, r in optim.items() if not n.startswith('PCA')),
                   key=lambda r: r['test_psnr'])['member']
  spread = [losses[n]['test_psnr'] for n in ('mse', 'l1', 'bce')]
  skip = arch['improved_skip']
  s2 = study_csv('s2_compression_rate')
  s3, s4 = study_csv('s3_faces'), study_csv('s4_colored_mnist')
  nl3 = next(r for n, r in s3.items() if n.startswith('NL-means'))
  nl4 = next(r for n, r in s4.items() if n.startswith('NL-means'))
  rd = rd_points('rd_cifar10')
  s1_link, best_link = '[S1](docs/studies/s1.md)', '[Codes better than PCA](docs/studies/best-codes.md)'
  rows = [
      [f'{s1_link}: ImprovedCAE on CIFAR-10, 30 epochs (shipped as `cifar10_improved`)',
       f'{_psnr_ssim(improved)} (S1 reports 23.92 dB)',
       f'PCA with 256 floats on the same split: {_psnr_ssim(pca5000)}'],
      [f'{s1_link}: optimizers, losses, architectures (10 epochs)',
       f'{best_optim.capitalize()} best; MSE, L1, BCE within {max(spread) - min(spread):.2f} dB; '
       f'skips reach {skip["test_psnr"]:.2f} dB only with {skip["bottleneck_floats"]:,} floats '
       '(more than the image)',
       f'PCA-256: {arch["PCA (256 floats)"]["test_psnr"]:.2f} dB'],
      ['[S2](docs/studies/s2.md): compression rate 8 (512 floats)',
       f'LeNet-5 keeps {100 * s2["rate_8"]["accuracy_ratio"]:.1f} % of its accuracy on the '
       f'reconstructions; {s2["rate_8"]["test_psnr"]:.2f} dB',
       f'PCA-512: {100 * s2["PCA (512 floats)"]["accuracy_ratio"]:.1f} %; '
       f'{s2["PCA (512 floats)"]["test_psnr"]:.2f} dB'],
      ['[S3](docs/studies/s3.md): faces, 64 floats',
       f'CAE {s3["cae"]["test_psnr"]:.2f} dB, FC AE {s3["fc_ae"]["test_psnr"]:.2f} dB; denoising '
       f'{s3["cae_denoise"]["test_psnr"] - s3["cae_denoise"]["test_noisy_psnr"]:+.1f} dB',
       f'PCA-64: {s3["PCA (64 floats)"]["test_psnr"]:.2f} dB; NL-means denoising: '
       f'{nl3["test_psnr"]:.2f} dB'],
      ['[S4](docs/studies/s4.md): denoising colored MNIST',
       f'AE with BatchNorm and dropout: {s4["ae_dropout_bn"]["test_psnr"]:.2f} dB (noisy input '
       f'{s4["ae_dropout_bn"]["test_noisy_psnr"]:.2f})',
       f'NL-means: {nl4["test_psnr"]:.2f} dB'],
      [f'{best_link}: `cifar10_best256`, 256 floats', f'**{_psnr_ssim(best256)}**',
       f'PCA-256: {_psnr_ssim(pca5000)}'],
      ['[Compression in bytes](docs/studies/compression-in-bytes.md): `cifar10_best256`\'s '
       'recipe without its block (256 floats), quantized and range-coded',
       f'BD-rate {pct(bd(rd, "best256", "WebP"))} against WebP files',
       f'PCA-256 coded the same way: {pct(bd(rd, "PCA (256 floats)", "WebP"))}'],
  ]
  return table(['study (page)', 'flax-cae', 'baseline beside it'], rows)


# --- writing and checking pages ----------------------------------------------------------


def rendered(text: str) -> str:
  def fill(m):
    name = m['name']
    if name not in TABLES:
      raise SystemExit(f'A page names table {name!r}, which docs/tables.py does not define; '
                       f'the tables it defines: {", ".join(sorted(TABLES))}.')
    return m.group(0).replace(m['body'], TABLES[name]()) if m['body'] else (
        m.group(0).replace('<!-- end of table -->', TABLES[name]() + '<!-- end of table -->'))
  return MARKER.sub(fill, text)


def differences(paths=None) -> list[str]:
  """One entry per table whose page text differs from what its records give."""
  out = []
  for path in paths or pages():
    text = path.read_text()
    for m in MARKER.finditer(text):
      want = TABLES[m['name']]() if m['name'] in TABLES else None
      if want != m['body']:
        diff = '\n'.join(difflib.unified_diff(m['body'].splitlines(), (want or '').splitlines(),
                                              'page', 'records', lineterm='', n=0))
        out.append(f'{_shown(path)}: table {m["name"]} differs from its records '
                   f'(run python docs/tables.py):\n{diff}')
  return out


def _shown(path: pathlib.Path) -> str:
  return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def marked(paths=None) -> list[tuple[pathlib.Path, str]]:
  """(page, table name) of every marked table."""
  return [(p, m['name']) for p in paths or pages() for m in MARKER.finditer(p.read_text())]


def write_all():
  for path in pages():
    text = path.read_text()
    new = rendered(text)
    if new != text:
      path.write_text(new)
      print(f'wrote the tables of {path.relative_to(ROOT)}')


# --- a run's record ----------------------------------------------------------------------


def record(workdir: pathlib.Path, name: str):
  """Copy what a finished run (or study) wrote into docs/records/NAME: results.json,
  config.json and its evaluation curve (evaluations.csv, from metrics.jsonl); for a study,
  study.csv and study.md and each member's record under members/."""
  target = RECORDS / name
  if (workdir / 'study.csv').is_file():
    target.mkdir(parents=True, exist_ok=True)
    for f in ('study.csv', 'study.md', 'config.json'):
      if (workdir / f).is_file():
        shutil.copy(workdir / f, target / f)
    for member in sorted((workdir / 'members').iterdir()):
      if (member / 'results.json').is_file():
        _run_record(member, target / 'members' / member.name)
  else:
    _run_record(workdir, target)
  print(f'recorded {workdir} in {target.relative_to(ROOT)}')


def _run_record(workdir: pathlib.Path, target: pathlib.Path):
  if not (workdir / 'results.json').is_file():
    raise SystemExit(f'{workdir} holds no results.json: record a finished run.')
  target.mkdir(parents=True, exist_ok=True)
  for f in ('results.json', 'config.json'):
    if (workdir / f).is_file():
      shutil.copy(workdir / f, target / f)
  evals = []
  with open(workdir / 'metrics.jsonl') as f:
    for line in f:
      r = json.loads(line)
      if r.get('split') in ('validation', 'test'):
        evals.append(r)
  keys = ['step', 'split'] + sorted({k for r in evals for k in r} - {'step', 'split', 'time',
                                                                      'epoch'})
  with open(target / 'evaluations.csv', 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=keys, extrasaction='ignore')
    w.writeheader()
    w.writerows(evals)


def _load_page_modules():
  """The table functions of the speed pages live in tables_speed.py beside this file."""
  sys.modules.setdefault('tables', sys.modules[__name__])
  if str(DOCS) not in sys.path:
    sys.path.insert(0, str(DOCS))
  import tables_speed  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--check', action='store_true')
  parser.add_argument('--record', default='', help='a finished workdir to record')
  parser.add_argument('--name', default='', help='the record\'s folder name')
  args = parser.parse_args()
  if args.record:
    if not args.name:
      raise SystemExit('--record needs --name, the folder under docs/records to write.')
    record(pathlib.Path(args.record), args.name)
  elif args.check:
    diffs = differences()
    print('\n\n'.join(diffs) or f'{len(marked())} tables match their records.')
    sys.exit(1 if diffs else 0)
  else:
    write_all()


_load_page_modules()

if __name__ == '__main__':
  main()
