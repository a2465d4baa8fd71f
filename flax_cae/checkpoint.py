"""Orbax checkpoints of the train state: keep the latest k *and* the best by validation PSNR.

A best-only policy (orbax's `max_to_keep` with `best_fn`) may delete the newest
checkpoint, which a resumed run needs; we combine two preservation policies instead.
Each checkpoint holds the train state (arrays) and a small JSON record (epoch,
early-stopping counters, best step) so a restarted run continues exactly.
"""

import logging as py_logging
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

BEST_METRIC = 'psnr'  # validation PSNR in dB, higher is better


class _OrbaxInfoFilter(py_logging.Filter):
  """Orbax logs dozens of INFO lines per save through absl; keep its warnings only."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or '/orbax/' not in record.pathname


def quiet_orbax():
  for handler in py_logging.getLogger().handlers + py_logging.getLogger('absl').handlers:
    if not any(isinstance(f, _OrbaxInfoFilter) for f in handler.filters):
      handler.addFilter(_OrbaxInfoFilter())


class Checkpoints:
  """The workdir's checkpoint directory."""

  def __init__(self, directory: str, keep: int):
    quiet_orbax()
    policy = cm.AnyPreservationPolicy([
        cm.LatestN(n=keep),
        # Sorted ascending by PSNR, BestN keeps the last (highest) one.
        cm.BestN(get_metric_fn=lambda m: m[BEST_METRIC], n=1),
    ])
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True)
    self.manager = ocp.CheckpointManager(directory, options=options, item_names=('state', 'meta'))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, meta: dict, metrics: dict | None = None):
    """Saves at `step`; `metrics` (validation, with 'psnr') ranks it for best-keeping."""
    self.manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        metrics=metrics)

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

  def restore_raw(self, step: int) -> tuple[dict, dict]:
    """Restores `step` as plain nested dicts of arrays, without a template (for inspection)."""
    restored = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                      meta=ocp.args.JsonRestore()))
    return restored['state'], dict(restored['meta'])

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
