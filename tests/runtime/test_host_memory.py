"""cpu_malloc='keep': freed host memory is reused instead of page-faulted back every step."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# In a fresh process (the setting is process-wide): cpu_malloc applied first, as launch.py
# does; then a worker thread (as XLA's are) allocates, touches and frees a 96 MB block three
# times, and the minor page faults of the last two rounds are printed.
SCRIPT = textwrap.dedent("""
    import ctypes, resource, sys, threading
    from flax_cae.runtime import host_memory
    print(host_memory.configure(sys.argv[1]))
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size, faults = 96 << 20, []
    def rounds():
      for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    thread = threading.Thread(target=rounds)
    thread.start()
    thread.join()
    print(sum(faults[1:]) // 2)
""")


def run(setting, platforms='cpu'):
  proc = subprocess.run([sys.executable, '-c', SCRIPT, setting], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS=platforms))
  assert proc.returncode == 0, proc.stderr[-2000:]
  what, faults = proc.stdout.split('\n')[-3:-1]
  return what, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='cpu_malloc=keep sets glibc malloc')
def test_keep_reuses_freed_memory_where_system_malloc_faults_it_back():
  pages = (96 << 20) // os.sysconf('SC_PAGE_SIZE')
  what, faults = run('system')
  assert what == 'system malloc'
  assert faults > pages // 2  # glibc maps a fresh block each round: every page faults again
  what, faults = run('keep')
  assert what == 'freed memory kept in the process (glibc mallopt)'
  assert faults < pages // 20


def test_keep_leaves_malloc_alone_when_jax_runs_on_an_accelerator():
  what, _ = run('keep', platforms='cuda')
  assert what == 'system malloc (JAX will not run on the CPU)'
