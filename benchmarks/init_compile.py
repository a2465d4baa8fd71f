"""A run's start on the CPU: compiling its initialisation at XLA's default LLVM level and at
flax_cae.runtime.xla.INIT_OPTIONS (what Trainer.init_state uses), same parameters bit for bit.

Each row builds the config's model and Trainer and times `init_state()` (trace, compile, run;
a fresh compile every call: no persistent cache) with each setting, alternating, the median
of --rounds; it checks that both give identical parameters and optimizer state. Prints a
Markdown table under a header naming the device, the CPU model and its vector extensions,
the versions, the date and the commit; --out=PATH writes PATH.md, PATH.csv and PATH.json
(docs/tables.py reads the CSV).

  python benchmarks/init_compile.py [--configs=default,cifar10_best256,...] [--rounds=3]
      [--out=benchmarks/results/NAME]
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.pop('JAX_COMPILATION_CACHE_DIR', None)  # time the compiler, not a cache read

import jax
import numpy as np

import record  # benchmarks/record.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs import cifar10_best256, cifar10_best64, default  # pylint: disable=g-import-not-at-top
from configs.studies import rate_distortion
from flax_cae import models
from flax_cae.training import trainer as trainer_lib
from flax_cae.runtime import xla
from flax_cae.data import pipeline


def _default():
  c = default.get_config()
  c.data.name = 'cifar10'
  return c


def _balle():
  c = cifar10_best256.get_config()
  member = rate_distortion.balle(0.01)
  c.model.update(member['model'])
  c.loss.update(member['loss'])
  return c


CONFIGS = {'default': _default, 'cifar10_best256': cifar10_best256.get_config,
           'cifar10_best64': cifar10_best64.get_config, 'balle2017': _balle}


def time_init(trainer, options):
  xla.init_compiler_options = lambda: options
  start = time.perf_counter()
  state = jax.block_until_ready(trainer.init_state())
  return time.perf_counter() - start, state


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--configs', default=','.join(CONFIGS))
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--image', default='32,32,3', help='H,W,C')
  parser.add_argument('--out', default='', help='write OUT.md, OUT.csv and OUT.json')
  args = parser.parse_args()
  shape = tuple(int(v) for v in args.image.split(','))
  ours = xla.init_compiler_options()
  if ours is None:
    sys.exit(f'INIT_OPTIONS are for the CPU backend; this is {jax.default_backend()}.')

  rows = []
  for name in args.configs.split(','):
    if name not in CONFIGS:
      sys.exit(f'Unknown config {name!r}; valid: {", ".join(CONFIGS)}.')
    config = CONFIGS[name]()
    model = models.build_model(config.model, shape)
    trainer = trainer_lib.Trainer(config, model, pipeline.make_mesh(), steps_per_epoch=10)
    times = {'default': [], 'ours': []}
    states = {}
    for _ in range(args.rounds):
      for key, options in (('default', None), ('ours', ours)):
        seconds, states[key] = time_init(trainer, options)
        times[key].append(seconds)
    same = all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(states['default']), jax.tree.leaves(states['ours']), strict=True))
    params = sum(x.size for x in jax.tree.leaves(states['ours'].params))
    rows.append({'config': name, 'model': config.model.name, 'parameters': int(params),
                 'default_s': float(np.median(times['default'])),
                 'init_options_s': float(np.median(times['ours'])), 'bit_identical': same,
                 'rounds_default_s': times['default'], 'rounds_init_options_s': times['ours']})

  title = header(shape, args.rounds, ours)
  lines = [f'A run\'s start: {title}', '',
           '| config | model | parameters | XLA default s | INIT_OPTIONS s | speed-up | '
           'bit-identical |', '|---|---|---|---|---|---|---|']
  lines += [f"| {r['config']} | {r['model']} | {r['parameters']:,} | {r['default_s']:.1f} | "
            f"{r['init_options_s']:.1f} | {r['default_s'] / r['init_options_s']:.1f}x | "
            f"{'yes' if r['bit_identical'] else 'NO'} |" for r in rows]
  text = '\n'.join(lines)
  print('\n' + text)
  if args.out:
    record.write(args.out, title, rows, text)
  if not all(r['bit_identical'] for r in rows):
    sys.exit('INIT_OPTIONS changed the initial state: it must not.')


def header(shape, rounds: int, options: dict) -> str:
  """The run's header line: what was timed, then record.machine_line (the device, the CPU
  model and its vector extensions, the versions, the host, the date and the commit)."""
  return (f'Trainer.init_state(), {"x".join(map(str, shape))} images, median of {rounds}, '
          f'XLA default vs {options}; {record.machine_line()}')


if __name__ == '__main__':
  main()
