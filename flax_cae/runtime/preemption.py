"""SIGTERM (how pods and SLURM preempt) and Ctrl-C: a run saves and stops, and the process
always ends within seconds.

`StopOnSigterm` is the polite path: inside a run, a signal sets a flag that the training loop
reads after each compiled call; it then saves a checkpoint and returns. Python runs signal
handlers only when the main thread returns to the interpreter, so a main thread blocked in
native code (an allocation that never returns, a compile, a read) would never see the signal.
`install()` therefore also starts a watchdog thread, woken by the signal itself through
`signal.set_wakeup_fd`: if the process has not ended `GRACE_SECONDS` after SIGTERM inside a run
(at once outside one), it removes the workdir locks this process holds and ends the process
with status 143 (130 for Ctrl-C). Checkpoints already written are kept; a half-written one is
ignored and removed by the next run in that workdir (checkpoint.py).

Many processes: JAX's preemption service (started by jax.distributed) catches SIGTERM on any
host and `reached_preemption_sync_point` turns True on all of them at the same call, so they
save the same step together; the watchdog then stays idle (that service owns the signal).
"""

import os
import signal
import sys
import threading
import time

import jax
from absl import logging
from jax.experimental import multihost_utils

from flax_cae.runtime import workdir as workdir_lib

# How long a run gets, after SIGTERM or a first Ctrl-C, to finish its step and save before
# the watchdog ends the process: below the 30 s that Kubernetes and SLURM wait by default
# before SIGKILL, above a checkpoint save of the largest shipped configs.
GRACE_SECONDS = 20.0
# A second Ctrl-C, or one outside a run: the main thread's KeyboardInterrupt gets this long.
INTERRUPT_SECONDS = 3.0
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}
NAMES = {signal.SIGTERM: 'SIGTERM', signal.SIGINT: 'Ctrl-C'}

_runs = []          # StopOnSigterm contexts now open (the innermost is the run in progress)
_installed = False


def _noop(signum, frame):
  """SIGTERM outside a run: Python must have a handler for the wakeup fd to be written; the
  watchdog does the rest."""
  del signum, frame


def install():
  """Starts the watchdog (once, from the main thread of a command-line entry point)."""
  global _installed
  if _installed or threading.current_thread() is not threading.main_thread():
    return
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
    signal.signal(signal.SIGTERM, _noop)
  threading.Thread(target=_watch, args=(read_fd,), daemon=True,
                   name='flax-cae-signal-watchdog').start()
  _installed = True


def _watch(read_fd: int):
  deadline, code, name, interrupts = None, 0, '', 0
  while True:
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    if timeout is not None and timeout == 0:
      _force_exit(code, name)
    ready = _wait(read_fd, timeout)
    if not ready:
      continue
    for signum in os.read(read_fd, 64):
      if signum not in EXIT_CODES:
        continue
      in_run = bool(_runs)
      if signum == signal.SIGINT:
        interrupts += 1
        wait = GRACE_SECONDS if in_run and interrupts == 1 else INTERRUPT_SECONDS
      else:
        wait = GRACE_SECONDS if in_run else 0.0
      new = time.monotonic() + wait
      if deadline is None or new < deadline:
        deadline, code, name = new, EXIT_CODES[signum], NAMES[signum]


def _wait(fd: int, timeout: float | None) -> bool:
  import select  # pylint: disable=g-import-not-at-top
  ready, _, _ = select.select([fd], [], [], timeout)
  return bool(ready)


def _force_exit(code: int, name: str):
  for path in list(workdir_lib.HELD):
    try:
      os.remove(path)
    except OSError:
      pass
  where = ('the run did not reach a point where it could save within '
           f'{GRACE_SECONDS:g} s' if _runs else 'no run was training')
  try:
    sys.stderr.write(f'flax-cae: stopped by {name} ({where}); checkpoints written so far are '
                     'kept: run the same command to resume.\n')
    sys.stderr.flush()
  finally:
    os._exit(code)  # pylint: disable=protected-access


class StopOnSigterm:
  """`with StopOnSigterm() as stop:` around a run; `stop.reached(call)` after each compiled
  call says whether to save and stop (module docstring). A second Ctrl-C interrupts at once
  (Python's KeyboardInterrupt)."""

  def __enter__(self):
    self.signalled = None  # the name of the signal that came
    self.previous = {}
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for sig in NAMES:
        self.previous[sig] = signal.signal(sig, self._handle)
    _runs.append(self)
    return self

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.signalled:
      raise KeyboardInterrupt  # the second Ctrl-C: stop now
    self.signalled = NAMES[signum]
    logging.warning('%s received: saving a checkpoint after the current step%s.', self.signalled,
                    ' (Ctrl-C again to stop at once)' if signum == signal.SIGINT else '')

  def reached(self, call_index: int) -> bool:
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(call_index)
    return bool(self.signalled)

  def __exit__(self, *exc):
    _runs.remove(self)
    for sig, previous in self.previous.items():
      signal.signal(sig, previous)
