"""Orbax checkpoints of the train state: keep the latest k *and* the best by the validation
selection metric (training/run.py: `selection_metric`, PSNR unless configured otherwise).

A best-only policy (orbax's `max_to_keep` with `best_fn`) may delete the newest
checkpoint, which a resumed run needs; we combine two preservation policies instead.
Members trained together share one checkpoint of their stacked states; the best of
each member is kept (`BestPerMember`).
Each checkpoint holds the train state (arrays) and a small JSON record (epoch,
early-stopping counters, best step) so a restarted run continues exactly.

Killed while saving, orbax leaves a `<step>.orbax-checkpoint-tmp-*` directory
that is never taken for a checkpoint; the run that owns the workdir (it holds its lock) says
so and removes it. Everything else reads through `Reader`, which never creates, cleans or
deletes anything: a half-written directory it sees may be a live run's save in progress. A
finished checkpoint that no longer reads (a damaged file) is moved to
`checkpoints.unreadable/` (kept, not deleted) and the previous one is used.
"""

import contextlib
import copy
import dataclasses
import glob
import logging as py_logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as cm

from flax_cae.runtime import errors

# The name under which each checkpoint stores its validation score(s) for best-keeping:
# the selection metric signed so that higher is better (training/run.py). Checkpoints written
# before the selection metric existed stored validation PSNR as 'psnr'.
SCORE = 'score'
LEGACY_SCORE = 'psnr'


class _OrbaxLogFilter(py_logging.Filter):
  """Orbax logs dozens of INFO lines per save through absl: keep its warnings and errors, as
  their first line only. A failed save reaches the user as one sentence (Checkpoints.save);
  orbax's tracebacks of it would bury that under a thousand lines."""

  def filter(self, record):
    if '/orbax/' not in record.pathname:
      return True
    if record.levelno < py_logging.WARNING:
      return False
    if 'is read only' in str(record.msg):  # Reader's own choice, not a problem
      return False
    record.msg = ' '.join(str(record.getMessage()).splitlines()[:1])[:300]
    record.args, record.exc_info, record.exc_text, record.stack_info = (), None, None, None
    return True


def _stray(exc) -> bool:
  """Errors of orbax's and tensorstore's background threads after a failed save or at exit:
  the event loop they report to is gone. The failure itself is reported once, by us."""
  return ((isinstance(exc, RuntimeError) and 'Event loop is closed' in str(exc))
          or (isinstance(exc, ImportError) and 'Python is likely shutting down' in str(exc)))


def _quiet_hooks():
  # tensorstore's threads print through sys.excepthook (PyErr_Print); coroutines that never
  # finished print through sys.unraisablehook at exit.
  if getattr(sys.excepthook, 'flax_cae', False):
    return
  excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

  def quiet_excepthook(exc_type, exc, tb):
    if not _stray(exc):
      excepthook(exc_type, exc, tb)

  def quiet_unraisablehook(unraisable):
    # Also orbax's read coroutines abandoned when a Reader's step was deleted mid-read (Gone).
    if not (_stray(unraisable.exc_value) or _from_orbax(unraisable.exc_value)):
      unraisablehook(unraisable)

  quiet_excepthook.flax_cae = True
  sys.excepthook, sys.unraisablehook = quiet_excepthook, quiet_unraisablehook


def _from_orbax(exc: BaseException) -> bool:
  tb = exc.__traceback__
  while tb is not None:
    if '/orbax/' in tb.tb_frame.f_code.co_filename:
      return True
    tb = tb.tb_next
  return False


class _WriteFailureTaskFilter(py_logging.Filter):
  """asyncio's "Task exception was never retrieved" (with a traceback) for each of orbax's
  tasks that failed: a write on a full disk, or a read of a damaged checkpoint (seen now and
  then while restoring one). Checkpoints reports each failure once, in one line."""

  def filter(self, record):
    exc = record.exc_info[1] if record.exc_info else None
    context = getattr(record, 'msg', '')
    if exc is None and isinstance(record.args, dict):
      exc = record.args.get('exception')
    return not ('never retrieved' in str(context) and exc is not None
                and (errors.write_failure(exc) is not None or _from_orbax(exc)))


def quiet_orbax():
  for handler in py_logging.getLogger().handlers + py_logging.getLogger('absl').handlers:
    if not any(isinstance(f, _OrbaxLogFilter) for f in handler.filters):
      handler.addFilter(_OrbaxLogFilter())
  asyncio_logger = py_logging.getLogger('asyncio')
  if not any(isinstance(f, _WriteFailureTaskFilter) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_WriteFailureTaskFilter())
  _quiet_hooks()


def _scores(metrics) -> list[float] | None:
  """The per-member validation scores a checkpoint was saved with (one number for a single
  run, a list for members trained together); NaN (a diverged member) ranks last."""
  key = SCORE if metrics and SCORE in metrics else LEGACY_SCORE
  if not metrics or key not in metrics:
    return None
  values = metrics[key]
  values = values if isinstance(values, (list, tuple)) else [values]
  return [v if v == v else -float('inf') for v in map(float, values)]


@dataclasses.dataclass
class BestPerMember:
  """Orbax preservation policy: keeps, for each member, the checkpoint with its highest
  score (orbax's BestN for one member). It reads only the metrics stored with each
  checkpoint, so it survives restarts."""

  def should_preserve(self, checkpoints, *, context) -> list[bool]:
    del context
    keep = [False] * len(checkpoints)
    scored = [(i, s) for i, c in enumerate(checkpoints) if (s := _scores(c.metrics))]
    for m in range(max((len(s) for _, s in scored), default=0)):
      ranked = [(s[m], i) for i, s in scored if m < len(s)]
      keep[max(ranked)[1]] = True
    return keep


class Checkpoints:
  """The workdir's checkpoint directory."""

  def __init__(self, directory: str, keep: int):
    quiet_orbax()
    self.directory = directory
    self.pending = None  # the step of a save still being written in the background
    half_written = sorted(glob.glob(os.path.join(directory, f'*{ocp.utils.TMP_DIR_SUFFIX}*')))
    policy = cm.AnyPreservationPolicy([
        cm.LatestN(n=keep),
        # Checkpoints saved without metrics (on SIGTERM) are left to LatestN.
        BestPerMember(),
    ])
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                           cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(
        directory, options=options,
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()})
    for path in half_written:
      step = os.path.basename(path).split('.')[0]
      logging.warning('The checkpoint of step %s in %s was left half-written (the run was '
                      'stopped while saving it) and is ignored; falling back to %s.',
                      step, directory, self._previous(int(step) if step.isdigit() else None))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, meta: dict, metrics: dict | None = None):
    """Saves at `step` (in the background); `metrics` ({'score': the signed validation
    selection metric, a list with one value per member trained together}) ranks it for
    best-keeping. A save that cannot be written (a full disk) raises StorageError, here or
    at the next save or wait."""
    self.wait()  # orbax would wait here too; this way a failure names the step it was
    # The JSON is written in the background while the run goes on updating its meta (the
    # rate at the end of training, the epoch): save a copy, the meta of this step.
    meta = copy.deepcopy(meta)
    with self._writing(step):
      self.manager.save(
          step,
          args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  meta=ocp.args.JsonSave(meta)),
          metrics=metrics)
    self.pending = step

  @contextlib.contextmanager
  def _writing(self, step: int | None):
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      reason = errors.write_failure(e)
      if reason is None:
        raise
      self.pending = None
      kept = [s for s in self.all_steps() if s != step]
      raise errors.StorageError(
          f'the checkpoint of step {step} could not be written to {self.directory} ({reason}); '
          f'{f"the checkpoint of step {max(kept)} is kept" if kept else "no checkpoint is kept"}: '
          'free disk space (or fix the folder\'s permissions) and run the same command to '
          'resume.') from None

  def restore(self, step: int, like: Any) -> tuple[Any, dict]:
    """Restores `step` into arrays with the shapes, dtypes and shardings of `like`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    restored = self.manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                meta=ocp.args.JsonRestore()))
    return restored['state'], dict(restored['meta'])

  def restore_meta(self, step: int) -> dict:
    """Only the JSON record of `step` (cheap; used to check a workdir before restoring)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored['meta'])

  def _previous(self, step: int | None) -> str:
    older = [s for s in self.all_steps() if step is None or s < step]
    return f'the checkpoint of step {max(older)}' if older else 'a fresh start (no older checkpoint)'

  def restore_latest(self, like: Any, check_meta: Callable[[dict], None] = lambda meta: None
                     ) -> tuple[int, Any, dict] | None:
    """(step, state, meta) of the newest checkpoint that reads, or None if there is none.

    `check_meta` sees each checkpoint's JSON record first and may raise (a workdir of
    another model is a user error, not damage). A checkpoint that fails to read is
    moved to `<directory>.unreadable/<step>` with a warning naming it, and the next
    older one is tried.
    """
    for step in sorted(self.all_steps(), reverse=True):
      try:
        meta = self.restore_meta(step)
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, e)
        continue
      check_meta(meta)
      try:
        state, meta = self.restore(step, like)
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, e)
        continue
      return step, state, meta
    return None

  def _set_aside(self, step: int, error: Exception):
    target = base = os.path.join(f'{self.directory}.unreadable', str(step))
    while os.path.exists(target):  # set aside before at this step: keep both
      target = f'{base}-{len(glob.glob(base + "*"))}'
    reason = ' '.join(str(error).split())[:200]
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
    multihost_utils.sync_global_devices(f'flax_cae_set_aside_{step}')
    self.manager.reload()
    logging.warning('The checkpoint of step %d in %s cannot be read (%s: %s); it was moved to %s '
                    'and the run falls back to %s.', step, self.directory, type(error).__name__,
                    reason, target, self._previous(step))

  def wait(self):
    with self._writing(self.pending):
      self.manager.wait_until_finished()
    self.pending = None

  def close(self):
    self.wait()
    self.manager.close()


class Reader:
  """A read-only view of a checkpoint folder that a training run may be writing right now
  (evaluate, visualize, a study's scoring): orbax in read-only mode, so nothing in the folder
  is created, cleaned or deleted, and a step the writer removes while it is being read is
  reported as `Gone` so the caller can pick again."""

  class Gone(Exception):
    """The step was deleted (by the run that owns the folder) while it was being read."""

  # Orbax lists a folder, then reads each step's timestamp: a step the writer deletes in
  # between fails the listing with FileNotFoundError (or NotADirectoryError, when it goes
  # between orbax's exists() and is_dir()), and listing again is right.
  LIST_ATTEMPTS = 10

  def __init__(self, directory: str):
    quiet_orbax()
    self.directory = directory
    options = ocp.CheckpointManagerOptions(
        read_only=True, create=False, cleanup_tmp_directories=False, save_interval_steps=0,
        enable_async_checkpointing=False)
    self.manager = self._listing(lambda: ocp.CheckpointManager(
        directory, options=options,
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()}))

  def _listing(self, fn):
    for attempt in range(self.LIST_ATTEMPTS):
      try:
        return fn()
      except (FileNotFoundError, NotADirectoryError):
        if attempt == self.LIST_ATTEMPTS - 1:
          raise
        time.sleep(0.01 * (attempt + 1))

  def steps(self) -> list[int]:
    """The finished checkpoints now on disk (re-listed at every call)."""
    self._listing(self.manager.reload)
    return sorted(self.manager.all_steps())

  # A read that fails while the writer deletes the step: how long the step's folder may take
  # to disappear (a recursive delete of a few files) before the failure is taken as real.
  GONE_SECONDS = 2.0

  def _read(self, step: int, read):
    """read(), or Gone if it failed because `step` was deleted meanwhile."""
    try:
      return read()
    except Exception:  # pylint: disable=broad-except
      deadline = time.monotonic() + self.GONE_SECONDS
      while True:
        if step not in self.steps():
          raise Reader.Gone(step) from None
        if time.monotonic() > deadline:
          raise
        time.sleep(0.05)

  def meta(self, step: int) -> dict:
    args = ocp.args.Composite(meta=ocp.args.JsonRestore())
    return dict(self._read(step, lambda: self.manager.restore(step, args=args))['meta'])

  def restore_raw(self, step: int) -> tuple[dict, dict]:
    """Restores `step` as nested dicts of arrays on this process's first device, whatever
    the devices and hosts that saved it."""
    one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    metadata = self._read(step, lambda: self.manager.item_metadata(step)['state'])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=one_device),
                            metadata)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                              meta=ocp.args.JsonRestore())
    restored = self._read(step, lambda: self.manager.restore(step, args=args))
    return restored['state'], dict(restored['meta'])

  def close(self):
    self.manager.close()
