"""Host memory for XLA's CPU backend: keep freed memory in the process (glibc only).

Every CPU training step allocates and frees XLA's temporaries. At batch 256 those are tens
of MB each, above glibc's mmap threshold (at most 32 MB), and the large ones are taken by
XLA's worker threads, whose malloc arenas cannot hold blocks over 64 MB. So glibc maps them
fresh and unmaps them on every step, and the kernel zero-fills each page again: thousands
of page faults per step. `keep_freed_memory` tells glibc to serve such blocks from one
heap and keep what is freed, as a caching allocator does; the page faults drop to about
zero after the first step. It must run before JAX starts its backend: XLA's threads
choose their arena on their first allocation.
"""

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util

import jax
from absl import logging

from flax_cae.runtime import errors

# config.cpu_malloc: 'keep' = keep_freed_memory() when JAX will run on the CPU, 'system' =
# glibc's defaults.
CPU_MALLOC = ('keep', 'system')

# mallopt(3) parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_KEEP = ((_M_ARENA_MAX, 1),               # one heap, so blocks of any size can be reused
         (_M_MMAP_THRESHOLD, 1 << 30),    # blocks up to 1 GiB from the heap, not mmap
         (_M_TRIM_THRESHOLD, 2 << 30))    # give memory back only above 2 GiB free


def check_name(name: str) -> str:
  if name not in CPU_MALLOC:
    raise errors.unknown_name('cpu_malloc', name, CPU_MALLOC)
  return name


def _runs_on_cpu() -> bool:
  """Whether JAX will pick the CPU, decided without starting a backend."""
  platforms = jax.config.jax_platforms  # JAX_PLATFORMS, e.g. 'cpu' or 'cuda,cpu'
  if platforms:
    return platforms.split(',')[0] == 'cpu'
  # An accelerator comes as a PJRT plugin (jax-cuda*-plugin, ROCm) or libtpu.
  return not (importlib.metadata.entry_points(group='jax_plugins')
              or importlib.util.find_spec('jax_plugins')
              or importlib.util.find_spec('libtpu'))


def _backends_started() -> bool:
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top  (no public API)
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):
    return False


def keep_freed_memory() -> bool:
  """Sets glibc's malloc to keep freed memory (see the module docstring); False if not glibc."""
  path = ctypes.util.find_library('c')
  try:
    libc = ctypes.CDLL(path)
    mallopt = libc.mallopt
  except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl without mallopt)
    return False
  return all(mallopt(param, value) == 1 for param, value in _KEEP)


def configure(name: str) -> str:
  """Applies config.cpu_malloc; returns what was done, for the log."""
  check_name(name)
  if name == 'system':
    return 'system malloc'
  if not _runs_on_cpu():
    return 'system malloc (JAX will not run on the CPU)'
  if _backends_started():
    logging.warning('cpu_malloc=keep is applied after JAX started; XLA threads that already '
                    'allocated keep their own malloc arenas (call it before any JAX work).')
  if not keep_freed_memory():
    return 'system malloc (not glibc, or mallopt refused)'
  return 'freed memory kept in the process (glibc mallopt)'
