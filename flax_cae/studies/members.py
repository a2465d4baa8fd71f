"""Training a study's runs: which of them may share one compiled program (`groups`), the
refusal of a member workdir trained under other settings, and `train_jobs`, which trains
what is not finished yet, one by one or together."""

import json
import os

from absl import logging

from flax_cae.runtime import errors
from flax_cae.training import loop
from flax_cae.training import resume
from flax_cae.runtime import writers
from flax_cae.evaluation import trained as trained_lib
from flax_cae.runtime.errors import ConfigError
from flax_cae.training import trainer as trainer_lib


def shared_fields(config) -> dict:
  """The flat config fields that members trained together must share (all but
  trainer_lib.MEMBER_NUMBERS)."""
  return {k: v for k, v in resume.flat_config(config).items() if k not in trainer_lib.MEMBER_NUMBERS}


def differ_in_numbers_only(a, b) -> bool:
  """Whether two member configs may train together: equal but for trainer_lib.MEMBER_NUMBERS."""
  return shared_fields(a) == shared_fields(b)


def groups(jobs):
  """Jobs [(key, workdir, config)] -> groups of jobs that may train together, in order."""
  out = []
  for job in jobs:
    for g in out:
      if differ_in_numbers_only(g[0][2], job[2]):
        g.append(job)
        break
    else:
      out.append([job])
  return out


def check_not_changed(jobs):
  """A member workdir already holding a run of other settings is refused (before anything
  is trained), naming the keys: a study never mixes members of two settings."""
  for key, member_dir, config in jobs:
    path = os.path.join(member_dir, 'config.json')
    if not os.path.isfile(path):
      continue
    with open(path) as f:
      saved = resume.flat_config(json.load(f))
    # Unlike a single run, a finished member is not trained further: its epochs must match too.
    diff = resume.config_diff(saved, resume.flat_config(config),
                             ignore=set(resume.MAY_CHANGE) - {'num_epochs'})
    if diff:
      raise ConfigError(
          f'study member {key!r} in {member_dir!r} was trained with other settings (saved vs '
          f'now: {diff}); use a new --workdir, or the settings that study was run with.')


def done(workdir) -> dict | None:
  path = os.path.join(workdir, 'results.json')
  if os.path.isfile(path):
    with open(path) as f:
      return json.load(f)
  return None


def train_jobs(jobs, workdir: str, splits, together: bool, group_name: str) -> dict:
  """Trains jobs [(key, member workdir, config)] that are not finished yet (one by one,
  or together in groups); returns {key: results}. A member that diverges is recorded as
  such (its results.json says at which step) and the others go on."""
  check_not_changed(jobs)
  results = {key: r for key, d, _ in jobs if (r := done(d)) is not None}
  todo = [job for job in jobs if job[0] not in results]
  for group in (groups(todo) if together else [[job] for job in todo]):
    if len(group) == 1:
      key, member_dir, c = group[0]
      logging.info('Study: training %s in %s%s.', key, member_dir,
                   ' on its own (it differs from the others in more than seed, learning rate '
                   'and loss weights)' if together and len(todo) > 1 else '')
      try:
        out = loop.train_and_evaluate(c, member_dir, splits=splits)
      except errors.DivergedError as e:
        logging.warning('Study: %s diverged (%s).', key, e)
        out = {'diverged_at_step': -1, 'error': str(e)}
        writers.write_results(member_dir, out)
      outs = [out]
    else:
      # Named by its members, so a resumed study finds the same group's checkpoints.
      gdir = os.path.join(workdir, 'groups', group_name + '+'.join(k for k, _, _ in group))
      logging.info('Study: training %s together in %s.', ', '.join(k for k, _, _ in group), gdir)
      outs = loop.train_members(group[0][2], gdir, group, splits=splits)
    if isinstance(outs, dict) and outs.get('preempted'):
      return {'preempted': True}
    for (key, _, _), out in zip(group, outs):
      if out.get('preempted'):
        return {'preempted': True}
      results[key] = out
  return results


def finished(member_dir) -> bool:
  """Whether a member trained to the end without diverging (it has a model to read)."""
  result = done(member_dir)
  return result is not None and result.get('diverged_at_step') is None


def loaded(member_dir):
  """The finished member's model (trained_lib.load_trained), or None."""
  return trained_lib.load_trained(member_dir) if finished(member_dir) else None


def member_key(name, seed_index, num_seeds):
  return name if num_seeds == 1 else f'{name}_seed{seed_index}'
