"""Where one training step's time goes on the CPU: flax-cae's compiled step beside PyTorch's
eager step, same model, batch and machine, in milliseconds per step by part of the step.

flax-cae: a `jax.profiler` trace of --steps steps of the real training step
(`throughput.bench_flax`: `Trainer`, data on the device), read back with
`jax.profiler.ProfileData`. XLA's CPU runtime traces each op of the compiled program under
its HLO name; each is classed by its HLO: convolutions, dense layers (dots, also those XLA
hands to YNNPACK), layout copies (transposes and copies XLA inserts, mostly to put a
convolution's operands in the layout its kernel needs) and the rest (normalization,
activations, loss, optimizer). Eigen's convolutions run on XLA's thread pool without a trace
event of their own: the trace shows their launch, then no op until they end, so the wall time
inside the program in which no op runs is its own part ("untraced"), most of it convolution
work. Wall time shared by ops that run at once on different threads is split between them,
so the parts add up to the time the program ran.

PyTorch (with `pip install -e '.[bench]'`): `torch.profiler` over --steps steps of the same
architecture (`torch_reference.TorchAutoencoder`, checked to compute the same function by
throughput.py) on a batch already in memory (NCHW, contiguous): forward, MSE, backward, Adam;
each ATen op's self time classed the same way (their sum leaves out Python's time between
ops, which the wall row holds).

  python benchmarks/profile_step.py [--models=improved_cae,base_cae] [--batch=256] [--steps=8]
      [--out=benchmarks/results/NAME]

Writes NAME.md, NAME.csv and NAME.json when --out is given.
"""

import argparse
import collections
import glob
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

import record  # benchmarks/record.py, beside this script
import throughput  # the training step as it benchmarks it, and the header line

from flax_cae.runtime import host_memory
from flax_cae.training import loop as train

PARTS = ('convolutions', 'dense layers', 'layout copies', 'the rest')
# Wall time inside the program in which no op has a trace event: Eigen's convolutions run on
# XLA's thread pool without one of their own (the gaps follow convolution launches).
UNTRACED = "untraced (Eigen's convolution work)"
SUM, WALL = 'sum of the parts', 'wall (no profiler)'
# Ops whose events span other ops' (their bodies): not a part of their own.
CONTAINERS = ('while', 'conditional', 'call')
LAYOUT_OPS = {'parameter', 'transpose', 'copy', 'bitcast', 'reshape', 'tuple',
              'get-tuple-element'}


def hlo_parts(hlo_text: str) -> dict[str, str]:
  """{HLO instruction name: part} for the instructions of a compiled program's text. An
  instruction is a convolution or a dense layer if it, or a computation it calls (followed
  down), holds one (a custom call by its target's name); a layout copy if it is a transpose
  or a copy, or a fusion of nothing but those and reshapes."""
  bodies, name = {}, None
  inst_re = re.compile(r'^\s+(?:ROOT )?%?([\w.-]+) = .*?\s([a-z][\w-]*)\((.*)$')
  for line in hlo_text.splitlines():
    head = re.match(r'^(?:ENTRY )?%?([\w.-]+) ', line)
    if head and line.rstrip().endswith('{'):
      name = head.group(1)
      bodies[name] = []
    elif name and (m := inst_re.match(line)):
      bodies[name].append(m.groups())

  def ops(inst_op, rest, seen):
    """Every op an instruction runs: itself and, down its called computations, theirs."""
    out = {inst_op}
    if inst_op == 'custom-call':
      target = re.search(r'custom_call_target="([^"]+)"', rest)
      out.add(target.group(1).lower() if target else '')
    for callee in re.findall(r'(?:calls|to_apply|called_computations)=\{?%?([\w.-]+)', rest):
      if callee not in seen:
        seen.add(callee)
        for _, op, more in bodies.get(callee, ()):
          out |= ops(op, more, seen)
    return out

  parts = {}
  for insts in bodies.values():
    for inst, op, rest in insts:
      if op in CONTAINERS:
        continue
      inner = ops(op, rest, set())
      if any('convolution' in o or 'conv' in o.split('$')[-1] for o in inner):
        parts[inst] = 'convolutions'
      elif any(o == 'dot' or 'matmul' in o for o in inner):
        parts[inst] = 'dense layers'
      elif op in ('transpose', 'copy') or (op == 'fusion' and inner - {'fusion'} <= LAYOUT_OPS):
        parts[inst] = 'layout copies'
      else:
        parts[inst] = 'the rest'
  return parts


def trace_parts(xplane: str, parts: dict[str, str]) -> tuple[dict[str, float], float]:
  """({part: seconds of wall time}, seconds the program ran): wall time inside the
  runtime's ThunkExecutor events (the Python dispatch between calls left out), split
  between the ops running at each instant, or UNTRACED where none is."""
  marks = []  # (time, +1 start | -1 end, event id, part or None for the program's extent)
  for plane in jax.profiler.ProfileData.from_file(xplane).planes:
    for line in plane.lines:
      if line.name == 'python':
        continue
      for ev in line.events:
        part = parts.get(ev.name)
        if ev.duration_ns > 0 and (part or ev.name.startswith('ThunkExecutor::Execute')):
          marks += [(ev.start_ns, 1, len(marks), part),
                    (ev.start_ns + ev.duration_ns, -1, len(marks), part)]
  if not any(m[3] for m in marks):
    raise RuntimeError(f'{xplane}: no op of the compiled step in the trace.')
  marks.sort(key=lambda m: (m[0], m[1]))
  out, ops, inside, prev, program = collections.Counter(), {}, 0, marks[0][0], 0
  for t, kind, key, part in marks:
    if t > prev and inside:
      program += t - prev
      if ops:
        for p in ops.values():
          out[p] += (t - prev) / len(ops)
      else:
        out[UNTRACED] += t - prev
    prev = t
    if part is None:
      inside += kind
    elif kind > 0:
      ops[key] = part
    else:
      ops.pop(key, None)
  return {p: out[p] / 1e9 for p in PARTS + (UNTRACED,)}, program / 1e9


def profile_flax(config, images, steps):
  """({part: ms per step}, wall ms per step without a profiler (best of two rounds), the
  model, {'program_s': seconds the traced program ran, 'traced_round_s': seconds the traced
  round took})."""
  with train.random_streams():
    r = throughput.bench_flax(config, images, steps, time_epoch=False)
  wall = min(r['timer'](steps) for _ in range(2)) / steps * 1e3
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp):
      traced_round = r['timer'](steps)
    xplane = glob.glob(f'{tmp}/**/*.xplane.pb', recursive=True)[0]
    seconds, program = trace_parts(xplane, hlo_parts(r['compiled'].as_text()))
  return ({p: s / steps * 1e3 for p, s in seconds.items()}, wall, r['model'],
          {'program_s': program, 'traced_round_s': traced_round})


def torch_part(op: str) -> str:
  if 'conv' in op:
    return 'convolutions'
  if op in ('aten::mm', 'aten::addmm', 'aten::bmm', 'aten::matmul', 'aten::linear'):
    return 'dense layers'
  if op in ('aten::copy_', 'aten::clone', 'aten::contiguous', 'aten::permute'):
    return 'layout copies'
  return 'the rest'


def profile_torch(name, model, images, steps):
  """({part: ms per step}, wall ms per step) of PyTorch's eager step, or None without torch."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    from torch.nn import functional as F  # pylint: disable=g-import-not-at-top
    import torch_reference as tr  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  net = tr.TorchAutoencoder(name, model.opts)
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)) / np.float32(255))

  def step():
    loss = F.mse_loss(net(x), x)
    opt.zero_grad()
    loss.backward()
    opt.step()
  for _ in range(3):
    step()
  walls = []
  for _ in range(2):
    t0 = time.perf_counter()
    for _ in range(steps):
      step()
    walls.append((time.perf_counter() - t0) / steps * 1e3)
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(steps):
      step()
  out = collections.Counter()
  for e in prof.key_averages():
    out[torch_part(e.key)] += e.self_cpu_time_total / 1e3 / steps  # microseconds -> ms
  return {p: out[p] for p in PARTS}, min(walls)


def table(title, rows, batch, steps, with_torch):
  lines = [f'Profile of one training step: {title}', '',
           f'Milliseconds per step at batch {batch}: {steps} traced steps after the untraced '
           'rounds; "wall" is the step timed without a profiler, best of two rounds of '
           f'{steps} steps.']
  for model in dict.fromkeys(r['model'] for r in rows):
    mine = [r for r in rows if r['model'] == model]
    head = '| part of the step | flax-cae ms |'
    if with_torch:
      head += ' PyTorch eager ms | flax-cae - PyTorch ms |'
    lines += ['', f'{model}:', '', head, '|' + '---|' * (4 if with_torch else 2)]
    for r in mine:
      cells = [r['part'], f"{r['flax_ms']:.1f}"]
      if with_torch:
        torch_ms = r.get('torch_ms')
        cells += (['—', '—'] if torch_ms is None else
                  [f'{torch_ms:.1f}', f"{r['flax_ms'] - torch_ms:+.1f}"])
      lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='improved_cae,base_cae',
                      help='registry models with a PyTorch copy')
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--steps', type=int, default=8, help='traced steps')
  parser.add_argument('--n', type=int, default=2048, help='random training images')
  parser.add_argument('--image', default='32,32,3')
  parser.add_argument('--out', default='', help='write OUT.md, OUT.csv and OUT.json')
  args = parser.parse_args()
  throughput.HOST_MEMORY = host_memory.configure('keep')  # as launch.py, before JAX starts
  if jax.default_backend() != 'cpu':
    raise SystemExit('profile_step.py reads the trace of XLA\'s CPU runtime; run it on a CPU '
                     '(JAX_PLATFORMS=cpu).')
  shape = tuple(int(v) for v in args.image.split(','))
  images = np.random.default_rng(0).integers(0, 256, (args.n, *shape), dtype=np.uint8)
  rows, torch_version, checks = [], None, {}
  for name in args.models.split(','):
    config = throughput.make_config(name, (), args.batch, 'float32')
    flax_ms, flax_wall, model, checks[name] = profile_flax(config, images, args.steps)
    torch_ms = profile_torch(name, model, images[:args.batch], args.steps)
    if torch_ms:
      import torch  # pylint: disable=g-import-not-at-top
      torch_version = torch.__version__
    flax_ms.update({SUM: sum(flax_ms.values()), WALL: flax_wall})
    if torch_ms:  # PyTorch's ops have events of their own: nothing is left untraced
      torch_ms = {**torch_ms[0], SUM: sum(torch_ms[0].values()), WALL: torch_ms[1]}
    for part in PARTS + (UNTRACED, SUM, WALL):
      row = {'model': name, 'batch': args.batch, 'part': part, 'flax_ms': flax_ms[part]}
      if torch_ms and part in torch_ms:
        row['torch_ms'] = torch_ms[part]
      rows.append(row)
    print(f'{name}: ' + ', '.join(f'{p} {v:.1f}' for p, v in flax_ms.items()), flush=True)
  title = throughput.header(torch_version)
  text = table(title, rows, args.batch, args.steps, torch_version is not None)
  print('\n' + text)
  if args.out:
    record.write(args.out, title, rows, text, checks=checks)


if __name__ == '__main__':
  main()
