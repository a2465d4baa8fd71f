"""The machine a number was measured on: the device, and for CPUs the model and the vector
extensions. Every benchmark header and study table names it (speed ratios against PyTorch
move with them: oneDNN gains more from AVX-512 than XLA's CPU backend does; docs/performance.md)."""

import datetime
import platform
import subprocess
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
# The extensions that decide which kernels XLA and oneDNN pick, in /proc/cpuinfo's names.
VECTOR_FLAGS = ('sse4_2', 'avx', 'avx2', 'fma', 'avx512f', 'avx512_bf16', 'avx512_fp16',
                'avx512_vnni', 'amx_tile', 'amx_bf16')


def cpu() -> str:
  """'Intel(R) Xeon(R) Processor, 2 cores, avx2 fma avx512f ...' from /proc/cpuinfo."""
  model, flags, cores = platform.processor() or platform.machine(), set(), 0
  try:
    for line in Path('/proc/cpuinfo').read_text().splitlines():
      key, _, value = line.partition(':')
      key = key.strip()
      if key == 'model name':
        model, cores = value.strip(), cores + 1
      elif key == 'flags' and not flags:
        flags = set(value.split())
  except OSError:  # not Linux: the model from platform only
    pass
  ext = ' '.join(f for f in VECTOR_FLAGS if f in flags) or 'unknown'
  return f'{model}, {cores or "?"} cores, vector extensions: {ext}'


def commit() -> str:
  """The source tree's `git describe`: its short commit (or the nearest tag and the commits
  since), '-dirty' where files differ from it; 'unknown' outside a git checkout or without
  git."""
  try:
    return subprocess.run(['git', 'describe', '--always', '--dirty', '--abbrev=7'], cwd=ROOT,
                          capture_output=True, text=True, timeout=30).stdout.strip() or 'unknown'
  except (OSError, subprocess.SubprocessError):
    return 'unknown'


def device() -> str:
  """'1 x NVIDIA H100 80GB HBM3 (gpu)', or for the CPU backend the CPU itself."""
  dev = jax.devices()[0]
  if jax.default_backend() == 'cpu':
    return f'CPU ({cpu()})'
  return f'{jax.device_count()} x {dev.device_kind} ({jax.default_backend()})'


def describe() -> str:
  """One line: devices, CPU, jax version, host, date, commit."""
  dev = jax.devices()[0]
  return (f'{jax.device_count()} x {dev.device_kind} ({jax.default_backend()}); CPU: {cpu()}; '
          f'jax {jax.__version__}; {platform.node()}; {datetime.date.today()}; commit {commit()}')
