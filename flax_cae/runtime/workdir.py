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

from flax_cae.runtime.errors import ConfigError

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


STUDY_FILE = 'study.json'


def check_kind(workdir: str, kind: str, name: str = ''):
  """A workdir holds one single run or one study: a study in a single run's workdir, a
  single run in a study's, or a study in another study's is one sentence."""
  if not os.path.isdir(workdir):
    return
  has = lambda f: os.path.exists(os.path.join(workdir, f))
  is_study = has(STUDY_FILE) or has('members')
  is_run = has('config.json') or has('checkpoints')
  if kind == 'study' and is_run and not is_study:
    raise ConfigError(f'--workdir={workdir} holds a single run (config.json, checkpoints/); a '
                      'study needs a workdir of its own: give a new --workdir.')
  if kind == 'run' and is_study:
    raise ConfigError(f'--workdir={workdir} holds a study (study.json, members/); a single run '
                      'needs a workdir of its own: give a new --workdir (each member\'s own '
                      'run is in WORKDIR/members/NAME).')
  if kind == 'study' and name and has(STUDY_FILE):
    with open(os.path.join(workdir, STUDY_FILE)) as f:
      saved = json.load(f).get('name')
    if saved and saved != name:
      raise ConfigError(f'--workdir={workdir} holds the study {saved!r}, not {name!r}; give a '
                        'new --workdir for this one.')


def mark_study(workdir: str, name: str):
  """Writes WORKDIR/study.json, which tells later runs that this workdir holds a study."""
  path = os.path.join(workdir, STUDY_FILE)
  if not os.path.exists(path):
    with open(path, 'w') as f:
      json.dump({'name': name}, f)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's, but alive
    return True
  return True


def holder(workdir: str) -> dict | None:
  """The lock's record ({pid, host, since}) when a run is using `workdir` now, else None (no
  lock, or one left by a process that has ended on this host). Readers call it to say that
  what they read is a run in progress."""
  try:
    with open(os.path.join(workdir, LOCK_FILE)) as f:
      record = json.load(f)
  except (OSError, ValueError):
    return None
  if not isinstance(record, dict):
    return None
  if (record.get('host') == socket.gethostname() and isinstance(record.get('pid'), int)
      and not _alive(record['pid'])):
    return None
  return record


def describe_holder(record: dict) -> str:
  return (f'process {record.get("pid")} on host {record.get("host")} (since '
          f'{record.get("since")})')


HELD = set()  # lock files this process holds (preemption.py removes them on a forced exit)


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
            f'{os.path.dirname(self.path)!r} is in use by {describe_holder(other)}; wait for '
            f'that run to end or use another --workdir (if that process is gone, delete '
            f'{self.path}).') from None
      with os.fdopen(fd, 'w') as f:
        json.dump(me, f)
      self.held = True
      HELD.add(self.path)
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
      HELD.discard(self.path)
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
