"""The workdir contract: a workdir holds one run, run by one process (group) at a time.

`Lock` is taken before anything is read or written: a second run in the same workdir ends
at once with one sentence naming the process that holds it. A lock left by a process that
died on this host is taken over with a warning. On many hosts the lock is the run's: process
0 takes it for all of them (they share the workdir).
"""

import datetime
import json
import os
import socket
import tempfile

import jax
from absl import logging

from flax_cae.errors import ConfigError

LOCK_FILE = '.lock'


def make(workdir: str) -> tuple[str, bool]:
  """(absolute path, whether it was created): `~` expanded, the folder made; a path that is
  a file, sits under a file or cannot be written is one sentence."""
  path = os.path.abspath(os.path.expanduser(workdir))
  created = not os.path.exists(path)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ConfigError(f'--workdir={workdir} cannot be used ({e.strerror or e}); choose a folder '
                      'you can write to.') from None
  try:  # a real write, not os.access: root passes that on a read-only mount
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as e:
    if created:
      os.rmdir(path)
    raise ConfigError(f'--workdir={workdir} cannot be written to ({e.strerror or e}); choose a '
                      'folder you can write to.') from None
  return path, created


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's, but alive
    return True
  return True


class Lock:
  """`with Lock(workdir):` holds WORKDIR/.lock ({pid, host, since}) for the run."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.held = False

  def __enter__(self):
    if jax.process_index() != 0:
      return self
    me = {'pid': os.getpid(), 'host': socket.gethostname(),
          'since': datetime.datetime.now().isoformat(timespec='seconds')}
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        other = self._read()
        if (other.get('host') == me['host'] and isinstance(other.get('pid'), int)
            and not _alive(other['pid'])):
          logging.warning('%s was left by process %s on %s, which has ended; taking it over.',
                          self.path, other['pid'], other['host'])
          os.remove(self.path)
          continue
        raise ConfigError(
            f'{os.path.dirname(self.path)!r} is in use by process {other.get("pid")} on host '
            f'{other.get("host")} (since {other.get("since")}); wait for that run to end or use '
            f'another --workdir (if that process is gone, delete {self.path}).') from None
      with os.fdopen(fd, 'w') as f:
        json.dump(me, f)
      self.held = True
      return self
    raise ConfigError(f'could not take {self.path}; delete it if no run uses this workdir.')

  def _read(self) -> dict:
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}

  def __exit__(self, *exc):
    if self.held:
      self.held = False
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
