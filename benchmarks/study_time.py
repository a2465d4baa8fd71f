"""A study's wall time, the number a user feels: `launch.py` on a study config, once with its
members trained together (runs that differ only in numbers as one vmapped program) and once
one by one, each in a fresh workdir, on the same prepared data.

For each way: the command's wall time; the training time its runs report (each results.json's
train_seconds, members and learning-rate tuning runs, a group's time counted once); and the
rest (the process's start, compilation, evaluation, PCA, tables and figures). Preparing the
data set is timed apart, once, before either.

  python benchmarks/study_time.py [--study=s1_optimizers] [--source_dir=CIFAR_JPEGS/train]
      [--images=50000] [--epochs=30] [--together=yes,no] [--out=benchmarks/results/NAME]
      [LAUNCH_FLAGS ...]   # passed to launch.py, e.g. --config.study.only=adam,nadam

Without --source_dir the images are random 32x32 RGB PNGs (`--images` of them, ten class
folders), carved like CIFAR-10's training JPEGs in the docs: a tenth each for validation and
test. Writes NAME.md, NAME.csv and NAME.json when --out is given.
"""

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import record  # benchmarks/record.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flax_cae.data import sources  # pylint: disable=g-import-not-at-top
from flax_cae.runtime import machine

WAYS = {'yes': 'together', 'no': 'one by one'}


def random_folder(root: Path, images: int, seed: int = 0):
  """`images` random 32x32 RGB PNGs in ten class folders under `root`."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  for i in range(images):
    folder = root / f'class_{i % 10}'
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f'{i:06d}.png')


def training_seconds(workdir: str) -> tuple[float, int]:
  """(seconds of training its runs report, runs): members and tuning runs; members trained
  together report their group's time each, so each counts its share."""
  total, runs = 0.0, 0
  for path in glob.glob(os.path.join(workdir, 'members', '*', 'results.json')) + glob.glob(
      os.path.join(workdir, 'tuning', '*', '*', 'results.json')):
    with open(path) as f:
      r = json.load(f)
    total += (r.get('train_seconds') or 0.0) / max(1, r.get('members_trained_together') or 1)
    runs += 1
  return total, runs


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--study', default='s1_optimizers', help='a config in configs/studies/')
  parser.add_argument('--source_dir', default='', help='an image folder; default: random PNGs')
  parser.add_argument('--images', type=int, default=50000, help='random images, without --source_dir')
  parser.add_argument('--epochs', type=int, default=30)
  parser.add_argument('--together', default='yes,no', help='study.train_together values to time')
  parser.add_argument('--out', default='', help='write OUT.md, OUT.csv and OUT.json')
  args, launch_flags = parser.parse_known_args()
  config = ROOT / 'configs' / 'studies' / f'{args.study}.py'
  if not config.is_file():
    raise SystemExit(f'--study={args.study}: there is no {config.relative_to(ROOT)}.')
  ways = args.together.split(',')
  if set(ways) - set(WAYS):
    raise SystemExit(f'--together={args.together!r}: give yes, no or both.')

  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    source = args.source_dir
    if not source:
      source = tmp / 'images'
      random_folder(source, args.images)
    t0 = time.perf_counter()
    builder = sources.prepare('image_folder', data_dir=tmp / 'tfds', source_dir=str(source),
                              download=False, image_size=(32, 32), channels=3)
    prepare_s = time.perf_counter() - t0
    n = builder.info.splits['train'].num_examples
    held_out = max(1, n // 10)
    title = (f'{args.study}, {args.epochs} epochs; {machine.describe()}; python '
             f'{platform.python_version()}; preparing the data set: {prepare_s:.1f} s')
    rows = []
    for way in ways:
      workdir = tmp / f'study_{way}'
      cmd = [sys.executable, str(ROOT / 'launch.py'), f'--config={config}', f'--workdir={workdir}',
             '--config.data.name=image_folder', f'--config.data.source_dir={source}',
             f'--config.data.data_dir={tmp / "tfds"}', '--config.data.download=False',
             '--config.data.image_size=(32, 32)', '--config.data.channels=3',
             f'--config.data.validation_size={held_out}', f'--config.data.test_size={held_out}',
             f'--config.num_epochs={args.epochs}', f'--config.study.train_together={way}',
             *launch_flags]
      t0 = time.perf_counter()
      proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
      wall = time.perf_counter() - t0
      if proc.returncode:
        raise SystemExit(f'the study ({WAYS[way]}) failed:\n{proc.stderr[-3000:]}')
      train_s, runs = training_seconds(str(workdir))
      rows.append({'study': args.study, 'members': WAYS[way], 'runs': runs,
                   'epochs': args.epochs, 'train_images': n - 2 * held_out,
                   'wall_s': wall, 'train_s': train_s, 'other_s': wall - train_s})
      print(json.dumps(rows[-1]), flush=True)
      if args.out:  # after each way: a run stopped by a time limit keeps the first
        record.write(args.out, title, rows, table(title, rows))
  print('\n' + table(title, rows))


def table(title, rows):
  base = next((r['wall_s'] for r in rows if r['members'] == 'one by one'), None)
  lines = [f'Study wall time: {title}', '',
           '| members | runs | train images | wall s | training s | other s | vs one by one |',
           '|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['members']} | {r['runs']} | {r['train_images']:,} | {r['wall_s']:.1f} | "
                 f"{r['train_s']:.1f} | {r['other_s']:.1f} | "
                 f"{(base / r['wall_s']) if base else float('nan'):.2f}x |")
  return '\n'.join(lines)


if __name__ == '__main__':
  main()
