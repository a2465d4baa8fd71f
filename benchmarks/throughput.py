"""Training and evaluation throughput of every registered model, against PyTorch in the same run.

For each model (the registry's, plus improved_cae with all skips), batch size and compute
dtype: steady-state training images/s (the real `flax_cae.training.trainer.Trainer` step on uint8 data
kept on the device, after a compile call, timed with block_until_ready), evaluation
images/s, compile time, one full epoch of CIFAR-10-sized data (50,000 32x32x3 images)
including the input path (host -> device copy, epoch permutation, every step), and FLOP/s
from XLA's cost analysis (against the device's peak where known). With PyTorch installed
(pip install -e '.[bench]'), the same architecture is trained by benchmarks/torch_reference.py
on the same data, batch size and machine, and checked to be the same function (weights copied
across, outputs compared); the ratios are flax-cae / PyTorch. Its loops (--torch): `eager` and
`compile`, the papers' DataLoader loop (each batch copied to the device); `resident`, the loop
of the CIFAR-10 speed-run codebases (data on the device as uint8, permuted there,
channels_last, torch.compile with CUDA graphs on a GPU). FLOPs per step come from a one-step
compile (XLA counts a loop's body once).
Training is timed in --rounds rounds that alternate between flax-cae and PyTorch, and each
side's median round is reported, so a slow spell of a noisy machine hits both sides.

  python benchmarks/throughput.py [--models=base_cae] [--batch_sizes=64,256]
      [--dtypes=float32,bfloat16] [--torch=eager,compile,resident] [--out=benchmarks/results/NAME]
  python benchmarks/throughput.py --scaling=1,2,4,8   # the same step on 1..8 devices

Writes NAME.md, NAME.csv and NAME.json when --out is given.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))
# On a GPU, JAX would otherwise take 75% of its memory at start, leaving PyTorch's side of
# the comparison (same process) too little.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

import record  # benchmarks/record.py, beside this script

from configs import s1
from flax_cae.runtime import host_memory
from flax_cae import models
from flax_cae.training import loop as train
from flax_cae.training import trainer as trainer_lib
from flax_cae.runtime import xla
from flax_cae.data import pipeline

# Dense peak FLOP/s by compute dtype (vendor data sheets; float32 as TF32, which JAX's
# default precision uses on these GPUs), matched against the start of jax's device_kind
# (e.g. 'NVIDIA H100 80GB HBM3'); CPUs: unknown.
PEAK_FLOPS = {
    'NVIDIA H100 PCIe': {'bfloat16': 756e12, 'float32': 378e12},
    'NVIDIA H100': {'bfloat16': 989e12, 'float32': 494e12},  # SXM, HBM3
    'NVIDIA H200': {'bfloat16': 989e12, 'float32': 494e12},
}


def peak_flops(device_kind: str, dtype: str) -> float | None:
  for prefix, peaks in PEAK_FLOPS.items():  # the more specific prefixes come first
    if device_kind.startswith(prefix):
      return peaks.get(dtype)
  return None


def variants() -> list[tuple[str, str, tuple[int, ...]]]:
  """(label, registry name, skips): every registered model, plus its skip variant if any."""
  out = []
  for name in models.autoencoder_names():
    spec = models.MODELS[name]
    out.append((name, name, ()))
    if spec.allows_skips:
      out.append((f'{name}+skips', name, tuple(range(1, len(spec.widths) + 1))))
  return out


# Settings a run can sweep (--variants): none changes the function computed, only how.
VARIANT_KEYS = ('model.transposed_conv', 'model.conv_input_grad', 'cpu_convolutions')


def parse_variant(text: str) -> dict:
  """'model.transposed_conv=dilated+cpu_convolutions=xla' -> {key: value}; 'default' -> {}."""
  out = {}
  for item in filter(None, text.split('+')):
    if item == 'default':
      continue
    key, _, value = item.partition('=')
    if key not in VARIANT_KEYS or not value:
      raise SystemExit(f'--variants: {item!r} is not KEY=VALUE with KEY in {", ".join(VARIANT_KEYS)}.')
    out[key] = value
  return out


def make_config(name, skips, batch, dtype, variant=None):
  config = s1.get_s1_config('cifar10', 'improved')
  config.model.update(name=name, widths=(), skips=skips, dtype=dtype)
  for key, value in (variant or {}).items():
    target, *rest = key.split('.')
    (config[target] if rest else config)[rest[0] if rest else target] = value
  config.batch_size = config.eval_batch_size = batch
  return config


def bench_flax(config, images_u8, steps, time_epoch):
  """One configuration: dict of measurements (see the module docstring) and 'timer',
  run(steps) -> seconds for that many more training steps. The epoch, if timed, is one
  pass over all of `images_u8`, from host memory to the last step."""
  mesh = pipeline.make_mesh()
  shape = images_u8.shape[1:]
  batch = config.batch_size
  n = len(images_u8)
  spe = n // batch
  model = models.build_model(config.model, shape)
  trainer = trainer_lib.Trainer(config, model, mesh, steps_per_epoch=spe)
  state = trainer.init_state()
  k = min(xla.DEFAULT_STEPS_PER_CALL.get(jax.default_backend(), 1), spe)
  sharding = pipeline.batch_sharding(mesh)

  t0 = time.perf_counter()
  abstract = jax.ShapeDtypeStruct(images_u8.shape, images_u8.dtype, sharding=sharding)
  abstract_labels = jax.ShapeDtypeStruct((n,), jnp.int32, sharding=sharding)
  perm = pipeline.epoch_permutation(0, 0, n, mesh)
  compile_chunk = lambda steps: trainer.train_chunk(steps, True).lower(
      state, abstract, abstract_labels, perm, 0).compile()
  labels = pipeline.to_global(np.zeros((n,), np.int32), sharding, (n,))  # unused by autoencoders
  step_fn = compile_chunk(k)
  compile_s = time.perf_counter() - t0
  # XLA's cost analysis counts a loop's body once, so a call of k steps reports one step's
  # FLOPs, not k: count them on a one-step compile.
  flops = step_flops(step_fn if k == 1 else compile_chunk(1))

  epoch_s = float('nan')
  if time_epoch:  # the input path (copy to the devices, permute) and every step
    # The epoch's last call runs the steps k does not divide, as train_and_evaluate does;
    # compiled here, outside the timing, as a run compiles it once.
    calls = [(offset, step_fn) for offset in range(0, spe - spe % k, k)]
    if spe % k:
      calls.append((spe - spe % k, compile_chunk(spe % k)))
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    images = pipeline.to_global(images_u8, sharding, images_u8.shape)
    perm = pipeline.epoch_permutation(0, 1, n, mesh)
    for offset, fn in calls:
      state, loss = fn(state, images, labels, perm, offset)
    jax.block_until_ready((state, loss))
    epoch_s = time.perf_counter() - t0
  else:
    images = pipeline.to_global(images_u8, sharding, images_u8.shape)
    state, loss = step_fn(state, images, labels, perm, 0)  # warm-up
    jax.block_until_ready(loss)

  box = {'state': state, 'call': 0}

  def timer(n_steps):
    calls = max(1, -(-n_steps // k))
    st = box['state']
    t0 = time.perf_counter()
    for _ in range(calls):
      st, loss = step_fn(st, images, labels, perm, (box['call'] * k) % (spe - k + 1))
      box['call'] += 1
    jax.block_until_ready((st, loss))
    box['state'] = st
    return (time.perf_counter() - t0) * n_steps / (calls * k)

  calls = max(1, -(-steps // k))
  eval_fn = trainer.eval_slice
  jax.block_until_ready(eval_fn(state, images, labels, 0, n))
  t0 = time.perf_counter()
  for i in range(calls):
    sums = eval_fn(state, images, labels, (i * batch) % (n - batch + 1), n)
  jax.block_until_ready(sums)
  eval_ips = calls * batch / (time.perf_counter() - t0)

  peak = peak_flops(jax.devices()[0].device_kind, config.model.dtype)
  return {'eval_ips': eval_ips, 'compile_s': compile_s, 'epoch_s': epoch_s,
          'flops_per_step': flops, 'peak': peak, 'steps_per_call': k, 'model': model,
          'timer': timer, 'compiled': step_fn}


def step_flops(compiled) -> float:
  """FLOPs of one call of a compiled program, by XLA's cost analysis (NaN if none)."""
  cost = compiled.cost_analysis() or {}
  if isinstance(cost, list):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  return float(cost.get('flops', float('nan')))


# The PyTorch loops (--torch): the papers' DataLoader loop, eager and compiled, and the
# device-resident compiled loop of the CIFAR-10 speed-run codebases.
TORCH_MODES = {'eager': 'eager', 'compile': 'compile', 'resident': 'resident'}


def torch_device() -> str:
  """PyTorch runs on the accelerator JAX uses (a CUDA GPU), else on the CPU."""
  import torch_reference as tr  # pylint: disable=g-import-not-at-top
  return tr.default_device() if jax.default_backend() == 'gpu' else 'cpu'


def bench_torch(label, model, images_u8, batch, modes):
  """PyTorch on the same architecture and data, checked to be the same function:
  {'params': n, 'max_diff': d, mode: run(steps) -> seconds, for each mode}."""
  import torch_reference as tr  # pylint: disable=g-import-not-at-top
  # Checked at initialisation (random weights, not a model collapsed onto the data's mean),
  # with non-trivial BatchNorm statistics.
  init = model.init({'params': jax.random.key(1), 'dropout': jax.random.key(1)},
                    images_u8[:1] / 255.0)
  init['batch_stats'] = jax.tree.map(lambda a: a + 0.5, init.get('batch_stats', {}))
  n_flax, n_torch, max_diff = tr.same_function(model, jax.device_get(init), images_u8[:8])
  if n_flax != n_torch or not max_diff < 1e-4:
    raise AssertionError(f'{label}: PyTorch mirror differs (params {n_flax} vs {n_torch}, '
                         f'max output difference {max_diff})')
  name = {s.encoder: k for k, s in models.MODELS.items() if s.torch_mirror}[model.encoder_cls]
  out = {'params': n_torch, 'max_diff': max_diff}
  for mode in modes:
    net = tr.TorchAutoencoder(name, model.opts).to(torch_device())
    if mode == 'resident':  # data on the device, channels_last, compiled: the speed-run loop
      out[mode] = tr.resident_timer(net, images_u8, batch, device=torch_device())
      continue
    if mode == 'compile':
      import torch  # pylint: disable=g-import-not-at-top
      net = torch.compile(net)
    out[mode] = tr.train_timer(net, images_u8, batch, warmup=3 if mode == 'eager' else 5,
                               device=torch_device())
  return out


def models_to_time(models_flag: str, torch_modes: list[str]) -> set[str] | None:
  """The labels or names --models asks for (None: every model). Without --models, a run
  against PyTorch times the models that have a PyTorch copy: the others (res_cae trains at
  80 images/s on a 2-core CPU) belong in a table of their own, with --torch=none."""
  if models_flag:
    return set(models_flag.split(','))
  if torch_modes:
    return {label for label, name, _ in variants() if models.MODELS[name].torch_mirror}
  return None


def fmt(v, spec=',.0f'):
  """A number as a table cell; a dash where it is missing, NaN or infinite."""
  return '—' if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


HOST_MEMORY = ''  # what host_memory.configure did (main sets it before JAX starts)


def header(torch_version):
  torch = f', torch {torch_version}' if torch_version else ''
  return f'{record.machine_line(torch)}, host memory: {HOST_MEMORY}'


def run_table(args, emit):
  """Times every model; emit(title, rows, table) after each row, so a run cut short keeps
  the rows it finished (a batch job's call may have a time limit)."""
  shape = tuple(int(v) for v in args.image.split(','))
  # The flax side keeps the whole (epoch-sized) set on the device; PyTorch gets its first n.
  images = np.random.default_rng(0).integers(0, 256, (args.epoch_images or args.n, *shape),
                                             dtype=np.uint8)
  torch_modes = [m for m in args.torch.split(',') if m and m != 'none']
  if set(torch_modes) - set(TORCH_MODES):
    raise SystemExit(f'--torch: {args.torch!r} names a loop that is not one of '
                     f'{", ".join(TORCH_MODES)} (or none).')
  torch_version = None
  if torch_modes:
    try:
      import torch  # pylint: disable=g-import-not-at-top
      import torch_reference as tr  # pylint: disable=g-import-not-at-top
      torch_version = f'{torch.__version__} ({torch_device()})'
      if 'resident' in torch_modes:
        torch_version += (f', resident loop compiled with mode '
                          f"'{tr.compile_mode(torch_device())}'")
    except ImportError:
      print('PyTorch is not installed (pip install -e ".[bench]"): flax-cae only.')
      torch_modes = []
  wanted = models_to_time(args.models, torch_modes)
  if torch_modes and not args.models:
    print('Against PyTorch: the models with a PyTorch copy; time the others with --torch=none.')
  title = header(torch_version)
  rows, torch_timers = [], {}
  for label, name, skips in variants():
    if wanted and label not in wanted and name not in wanted:
      continue
    for batch in (int(b) for b in args.batch_sizes.split(',')):
      for dtype in args.dtypes.split(','):
        for variant in args.variants.split(','):
          config = make_config(name, skips, batch, dtype, parse_variant(variant))
          with train.random_streams():
            r = bench_flax(config, images, args.steps, time_epoch=bool(args.epoch_images))
          timers = {'flax': r.pop('timer')}
          row = {'model': label, 'batch': batch, 'dtype': dtype, 'variant': variant,
                 **{k: v for k, v in r.items()
                    if k not in ('model', 'flops_per_step', 'peak', 'compiled')}}
          # The papers' code trains in float32; S1's encoder-residual tries and S2's rate
          # CAE have no mirror.
          if torch_modes and dtype == 'float32' and models.MODELS[name].torch_mirror:
            if (label, batch) not in torch_timers:  # once per architecture and batch size
              torch_timers[label, batch] = bench_torch(label, r['model'], images[:args.n],
                                                       batch, torch_modes)
            t = torch_timers[label, batch]
            row.update(params=t['params'], same_function_max_diff=t['max_diff'])
            timers.update({m: t[m] for m in torch_modes})
          ips = {side: [] for side in timers}
          for _ in range(args.rounds):  # alternate the sides: machine noise hits both
            for side, run in timers.items():
              ips[side].append(args.steps * batch / run(args.steps))
          row['train_ips'] = float(np.median(ips.pop('flax')))
          row['train_ips_rounds'] = ips  # PyTorch's rounds; flax's median is train_ips
          row['tflops'] = r['flops_per_step'] * row['train_ips'] / batch / 1e12
          row['peak_fraction'] = row['tflops'] * 1e12 / r['peak'] if r['peak'] else float('nan')
          for m in torch_modes if 'params' in row else ():
            row[f'torch_{m}_ips'] = float(np.median(ips[m]))
            row[f'vs_torch_{m}'] = row['train_ips'] / row[f'torch_{m}_ips']
          rows.append(row)
          print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                            for k, v in row.items()}), flush=True)
          emit(title, rows, table(rows, title, args.epoch_images, torch_modes))
  return title, rows, table(rows, title, args.epoch_images, torch_modes)


def table(rows, title, epoch_images, torch_modes):
  """The Markdown table of run_table's rows."""
  cols = ['model', 'batch', 'dtype', 'variant', 'train_ips', 'eval_ips', 'compile_s',
          'epoch_s', 'tflops', 'peak_fraction']
  names = ['model', 'batch', 'dtype', 'variant', 'train img/s', 'eval img/s',
           'compile s', f'epoch s ({epoch_images:,} img)' if epoch_images else 'epoch s',
           'TFLOP/s', 'of peak']
  for m in torch_modes:
    cols += [f'torch_{m}_ips', f'vs_torch_{m}']
    names += [f'PyTorch {TORCH_MODES[m]} img/s', f'flax-cae / PyTorch {TORCH_MODES[m]}']
  specs = {'train_ips': ',.0f', 'eval_ips': ',.0f', 'compile_s': '.1f', 'epoch_s': '.2f',
           'tflops': '.3f', 'peak_fraction': '.1%'}
  for m in TORCH_MODES:
    specs.update({f'torch_{m}_ips': ',.0f', f'vs_torch_{m}': '.2f'})
  lines = [f'Training throughput: {title}', '',
           '| ' + ' | '.join(names) + ' |', '|' + '---|' * len(names)]
  for r in rows:
    lines.append('| ' + ' | '.join(
        fmt(r.get(c), specs[c]) if c in specs else str(r.get(c, '—')) for c in cols) + ' |')
  if any('params' in r for r in rows):
    lines.append('')
    lines.append('Same function: ' + '; '.join(sorted({
        f"{r['model']} {r['params']:,} parameters on both sides, outputs within "
        f"{r['same_function_max_diff']:.0e}" for r in rows if 'params' in r})) + '.')
  return '\n'.join(lines)


def run_scaling(args):
  """The same step on 1, 2, 4, 8 devices: each count in a fresh process (fake CPU devices)."""
  rows = []
  for n in (int(v) for v in args.scaling.split(',')):
    env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={n}')
    if jax.default_backend() != 'cpu':
      if n > jax.device_count():
        print(f'scaling: skipping {n} devices, this machine has {jax.device_count()}.')
        continue
      env = dict(os.environ, CUDA_VISIBLE_DEVICES=','.join(map(str, range(n))))
    cmd = [sys.executable, __file__, f'--models={args.models or "improved_cae"}',
           f'--batch_sizes={args.batch_sizes.split(",")[-1]}', f'--dtypes={args.dtypes.split(",")[0]}',
           '--torch=none', '--epoch_images=0', f'--steps={args.steps}', f'--rounds={args.rounds}',
           f'--n={args.n}',
           f'--image={args.image}']
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
      raise RuntimeError(proc.stderr[-2000:])
    r = json.loads([l for l in proc.stdout.splitlines() if l.startswith('{')][0])
    rows.append({'devices': n, 'model': r['model'], 'batch': r['batch'],
                 'train_ips': r['train_ips'], 'per_device_ips': r['train_ips'] / n})
  title = header(None).replace(f'{jax.device_count()} x ', '')
  lines = [f'Scaling: {title}', '', '| devices | model | global batch | train img/s | '
           'img/s per device | vs 1 device |', '|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['devices']} | {r['model']} | {r['batch']} | {r['train_ips']:,.0f} | "
                 f"{r['per_device_ips']:,.0f} | {r['train_ips'] / rows[0]['train_ips']:.2f}x |")
  return title, rows, '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='', help='labels or names; default: all')
  parser.add_argument('--batch_sizes', default='64,256')
  parser.add_argument('--dtypes', default='float32,bfloat16')
  parser.add_argument('--variants', default='default',
                      help='comma-separated settings to compare, each default or KEY=VALUE[+...] '
                           f'with KEY in {", ".join(VARIANT_KEYS)}; e.g. '
                           'default,model.transposed_conv=dilated')
  parser.add_argument('--torch', default='eager,resident',
                      help='PyTorch loops to compare, of ' + ','.join(TORCH_MODES) + ' | none: '
                           'eager and compile are the DataLoader loop of the papers, resident '
                           'keeps the data on the device and compiles (CUDA graphs on a GPU)')
  parser.add_argument('--steps', type=int, default=20, help='timed training steps per round')
  parser.add_argument('--rounds', type=int, default=5,
                      help='timing rounds, alternating flax-cae and PyTorch; medians reported')
  parser.add_argument('--epoch_images', type=int, default=50000, help='0 skips the epoch')
  parser.add_argument('--n', type=int, default=4096,
                      help='images for PyTorch, and for flax-cae when no epoch is timed')
  parser.add_argument('--image', default='32,32,3')
  parser.add_argument('--scaling', default='', help='device counts, e.g. 1,2,4,8')
  parser.add_argument('--cpu_malloc', default='keep', choices=host_memory.CPU_MALLOC,
                      help="as launch.py's config.cpu_malloc; process-wide, so PyTorch's side "
                           'runs with it too')
  parser.add_argument('--out', default='', help='write OUT.md, OUT.csv and OUT.json')
  args = parser.parse_args()
  global HOST_MEMORY
  HOST_MEMORY = host_memory.configure(args.cpu_malloc)

  def write(title, rows, text):
    if args.out:
      record.write(args.out, title, rows, text, sort_columns=True,
                   flops_counted='one-step compile')

  title, rows, text = run_scaling(args) if args.scaling else run_table(args, write)
  print('\n' + text)
  write(title, rows, text)


if __name__ == '__main__':
  main()
