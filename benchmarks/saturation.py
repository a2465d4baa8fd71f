"""Where a device saturates: training images/s as the batch grows, and as members trained
together multiply the work of each step, against the device's peak FLOP/s.

For each model of --models, two tables:
  batch    one member, at each batch size of --batch_sizes;
  members  M members trained together (one vmapped program, `Trainer(members=...)`, the
           members differing in seed and learning rate) for each M of --members, at
           --member_batch images per member (default: the model's own config's batch).
Each row: images per step (batch x members), training images/s of all members together,
that against the table's first row, FLOPs per step (XLA's cost analysis of a one-step
compile: it counts a loop's body once, so a k-step call is never divided by k), TFLOP/s,
and their fraction of the peak. The peak is the data sheet's dense float32 (TF32) figure
on a GPU it knows; elsewhere (CPUs have no such figure) the best FLOP/s of an XLA float32
matmul (--matmul x --matmul), measured in the same run.

A model is a registry name (S1's CIFAR-10 improved config with that model, as
throughput.py builds it) or a config of configs/ with get_config() (its model, e.g.
cifar10_best256's res_cae); float32, on random uint8 --image data kept on the device. Each
configuration is compiled once (the backend's steps per call), called once to warm up, then
timed in --rounds rounds of --steps steps (rounded up to whole calls); the median round is
reported, every round kept in the JSON.

  python benchmarks/saturation.py [--models=improved_cae,cifar10_best256]
      [--batch_sizes=64,128,256,512,1024,2048,4096] [--members=1,2,4,8,16]
      [--member_batch=N] [--steps=8] [--rounds=3] [--out=benchmarks/results/NAME]

Writes NAME.md, NAME.csv and NAME.json when --out is given, after every row, so a run
stopped by a time limit keeps the rows it measured.
"""

import argparse
import importlib
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))
# JAX would otherwise take 75% of a GPU's memory at start, whatever the largest batch needs.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

import record  # benchmarks/record.py, beside this script
import throughput  # its step timing's parts, header and data-sheet peaks

from configs import s1
from flax_cae import models
from flax_cae.data import pipeline
from flax_cae.runtime import host_memory
from flax_cae.runtime import xla
from flax_cae.training import loop as train
from flax_cae.training import trainer as trainer_lib

TABLES = ('batch', 'members')


def config_names() -> list[str]:
  """The configs/NAME.py that define get_config(), read without importing them."""
  return sorted(p.stem for p in (ROOT / 'configs').glob('*.py')
                if 'def get_config(' in p.read_text())


def check_models(names: list[str]):
  for name in names:
    if name not in models.MODELS and name not in config_names():
      raise SystemExit(
          f'--models: {name!r} is neither a registered model ({", ".join(models.model_names())}) '
          f'nor a config of configs/ with get_config() ({", ".join(config_names())}).')


def model_config(name: str):
  """float32 config of a model name: a registry model in S1's CIFAR-10 improved config (with
  that config's batch size), else the model of configs/NAME.py's get_config()."""
  if name in models.MODELS:
    config = throughput.make_config(name, (), 0, 'float32')
    config.batch_size = s1.get_s1_config('cifar10', 'improved').batch_size
  else:
    config = importlib.import_module(f'configs.{name}').get_config()
    config.model.dtype = 'float32'
  config.eval_batch_size = config.batch_size
  return config


def learning_rates(base: float, members: int) -> list[float]:
  """Members' peak rates, a factor of 2 either side of the config's: far enough apart to
  be a tuning grid, near enough that no member diverges (NaNs can change a CPU's speed)."""
  return [base] if members == 1 else list(base * 2.0 ** np.linspace(-1, 1, members))


def matmul_flops(size: int, repeats: int = 5) -> float:
  """Best FLOP/s of a jitted float32 size x size matmul, after a warm-up call."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
  dot = jax.jit(jnp.dot)
  jax.block_until_ready(dot(a, b))
  best = math.inf
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(dot(a, b))
    best = min(best, time.perf_counter() - t0)
  return 2 * size ** 3 / best


def device_peak(matmul_size: int) -> tuple[float, str]:
  """(FLOP/s, what they are): the data sheet's on a GPU it knows, else a matmul timed now."""
  kind = jax.devices()[0].device_kind
  sheet = throughput.peak_flops(kind, 'float32')
  if sheet:
    return sheet, f"the {kind}'s dense TF32 data-sheet figure ({sheet / 1e12:,.0f} TFLOP/s)"
  measured = matmul_flops(matmul_size)
  return measured, (f"XLA's float32 matmul, measured in this run: {measured / 1e9:,.1f} GFLOP/s "
                    f'({matmul_size}x{matmul_size}, best of 5)')


def measure(config, batch, members, images, labels, args):
  """One configuration's training: {'flops_per_step', 'compile_s', 'steps_per_call',
  'steps', 'round_s'} (steps per round, seconds of each round). members=0 is a single run;
  M >= 1 the vmapped program of M members."""
  config = config.copy_and_resolve_references()
  config.batch_size = config.eval_batch_size = batch
  mesh = pipeline.make_mesh()
  n = len(images)
  spe = n // batch
  model = models.build_model(config.model, images.shape[1:])
  numbers = None
  if members:
    numbers = {'seed': jnp.arange(members, dtype=jnp.int32),
               'learning_rate': jnp.asarray(
                   learning_rates(config.optimizer.learning_rate, members), jnp.float32)}
    perm = pipeline.epoch_permutations(numbers['seed'], 0, n, mesh)
  else:
    perm = pipeline.epoch_permutation(config.seed, 0, n, mesh)
  trainer = trainer_lib.Trainer(config, model, mesh, steps_per_epoch=spe, members=numbers)
  state = trainer.init_state()
  k = min(xla.DEFAULT_STEPS_PER_CALL.get(jax.default_backend(), 1), spe)

  def compile_chunk(steps):
    return trainer.train_chunk(steps, True).lower(state, images, labels, perm, 0).compile()
  t0 = time.perf_counter()
  step_fn = compile_chunk(k)
  compile_s = time.perf_counter() - t0
  # XLA's cost analysis counts a loop's body once: a k-step call reports one step's FLOPs.
  flops = throughput.step_flops(step_fn if k == 1 else compile_chunk(1))

  state, loss = step_fn(state, images, labels, perm, 0)  # warm-up
  jax.block_until_ready((state, loss))
  calls = max(1, -(-args.steps // k))
  round_s, call = [], 1
  for _ in range(args.rounds):
    t0 = time.perf_counter()
    for _ in range(calls):
      state, loss = step_fn(state, images, labels, perm, (call * k) % (spe - k + 1))
      call += 1
    jax.block_until_ready((state, loss))
    round_s.append(time.perf_counter() - t0)
  return {'flops_per_step': flops, 'compile_s': compile_s, 'steps_per_call': k,
          'steps': calls * k, 'round_s': round_s}


def make_row(model, table, batch, members, r, peak, first):
  """The table's row of measure's result r; first: the table's first row (None for it)."""
  per_step = batch * members
  rounds_ips = [per_step * r['steps'] / s for s in r['round_s']]
  ips = float(np.median(rounds_ips))
  tflops = r['flops_per_step'] * ips / per_step / 1e12
  return {'model': model, 'table': table, 'batch': batch, 'members': members,
          'images_per_step': per_step, 'train_ips': ips,
          'vs_first_row': ips / first['train_ips'] if first else 1.0,
          'flops_per_step': r['flops_per_step'], 'tflops': tflops,
          'peak_fraction': tflops * 1e12 / peak, 'steps_per_call': r['steps_per_call'],
          'steps_per_round': r['steps'], 'compile_s': r['compile_s'],
          'train_ips_rounds': rounds_ips}


def markdown(title, rows, args, peak_source):
  fmt = throughput.fmt
  steps = '/'.join(str(s) for s in sorted({r['steps_per_round'] for r in rows}))
  per_call = '/'.join(str(s) for s in sorted({r['steps_per_call'] for r in rows}))
  lines = [f'Saturation: {title}', '',
           f'Training images/s (all members together) in float32 on random uint8 '
           f'{args.image.replace(",", "x")} images kept on the device: median of {args.rounds} '
           f'rounds of {steps} steps (steps per call: {per_call}). '
           "FLOPs per step: XLA's cost analysis of a one-step compile. "
           f'Of peak: {peak_source}.']
  cols = ('| batch per member | members | images per step | train img/s | vs first row | '
          'GFLOP per step | TFLOP/s | of peak |')
  for model in dict.fromkeys(r['model'] for r in rows):
    for table in TABLES:
      mine = [r for r in rows if r['model'] == model and r['table'] == table]
      if not mine:
        continue
      what = ('one member, by batch size' if table == 'batch' else
              f'members trained together, batch {mine[0]["batch"]} each')
      lines += ['', f'{model}, {what}:', '', cols, '|' + '---|' * 8]
      for r in mine:
        lines.append(
            f"| {r['batch']} | {r['members']} | {r['images_per_step']:,} | "
            f"{fmt(r['train_ips'], ',.0f')} | {fmt(r['vs_first_row'], '.2f')}x | "
            f"{fmt(r['flops_per_step'] / 1e9, '.3g')} | {fmt(r['tflops'], '.3g')} | "
            f"{fmt(r['peak_fraction'], '.1%')} |")
  return '\n'.join(lines)


def ints(text: str, flag: str) -> list[int]:
  try:
    values = [int(v) for v in text.split(',')]
  except ValueError:
    values = []
  if not values or min(values) < 1:
    raise SystemExit(f'{flag}: {text!r} is not a comma-separated list of positive integers.')
  return values


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='improved_cae,cifar10_best256',
                      help='registry models or configs/NAME.py configs')
  parser.add_argument('--batch_sizes', default='64,128,256,512,1024,2048,4096')
  parser.add_argument('--members', default='1,2,4,8,16', help='members trained together')
  parser.add_argument('--member_batch', type=int, default=0,
                      help="batch per member in the members table; 0: the model's config's")
  parser.add_argument('--steps', type=int, default=8,
                      help='timed training steps per round, rounded up to whole calls')
  parser.add_argument('--rounds', type=int, default=3, help='timing rounds; medians reported')
  parser.add_argument('--n', type=int, default=0,
                      help='training images on the device; 0: twice the most images per step, '
                           'and enough for one call of the backend steps at the largest batch')
  parser.add_argument('--image', default='32,32,3')
  parser.add_argument('--matmul', type=int, default=2048,
                      help='size of the square matmul that measures the peak where no data '
                           'sheet gives one')
  parser.add_argument('--out', default='', help='write OUT.md, OUT.csv and OUT.json')
  args = parser.parse_args()
  names = [m for m in args.models.split(',') if m]
  check_models(names)
  batch_sizes = ints(args.batch_sizes, '--batch_sizes')
  member_counts = ints(args.members, '--members')
  shape = tuple(ints(args.image, '--image'))
  # Before any JAX work: XLA's threads keep the malloc arenas they start with.
  throughput.HOST_MEMORY = host_memory.configure('keep')

  configs = {name: model_config(name) for name in names}
  member_batch = {name: args.member_batch or c.batch_size for name, c in configs.items()}
  k = xla.DEFAULT_STEPS_PER_CALL.get(jax.default_backend(), 1)
  largest_batch = max(batch_sizes + list(member_batch.values()))
  most_per_step = max(batch_sizes + [b * max(member_counts) for b in member_batch.values()])
  n = args.n or max(2 * most_per_step, k * largest_batch)
  if n < largest_batch:
    raise SystemExit(f'--n={n} is fewer images than the largest batch ({largest_batch}).')
  mesh = pipeline.make_mesh()
  sharding = pipeline.batch_sharding(mesh)
  host = np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)
  images = pipeline.to_global(host, sharding, host.shape)
  labels = pipeline.to_global(np.zeros((n,), np.int32), sharding, (n,))  # unused by autoencoders
  del host

  peak, peak_source = device_peak(args.matmul)
  title = throughput.header(None)
  print(f'peak: {peak_source}', flush=True)
  rows = []
  with train.random_streams():
    for name in names:
      plan = ([('batch', b, 0) for b in batch_sizes] +
              [('members', member_batch[name], m) for m in member_counts])
      for table, batch, members in plan:
        r = measure(configs[name], batch, members, images, labels, args)
        first = next((x for x in rows if x['model'] == name and x['table'] == table), None)
        rows.append(make_row(name, table, batch, members or 1, r, peak, first))
        print(json.dumps({key: (round(v, 4) if isinstance(v, float) else v)
                          for key, v in rows[-1].items() if key != 'train_ips_rounds'}),
              flush=True)
        if args.out:
          record.write(args.out, title, rows, markdown(title, rows, args, peak_source),
                       peak=peak, peak_source=peak_source, flops_counted='one-step compile',
                       images=n, image_shape=shape)
  print('\n' + markdown(title, rows, args, peak_source))


if __name__ == '__main__':
  main()
