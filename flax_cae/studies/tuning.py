"""Learning-rate tuning (S1 tunes each optimizer's rate): short runs at the member's rate
times each of study.lr_factors, the best by validation PSNR kept."""

import copy
import math
import os

from absl import logging

from flax_cae.runtime import errors
from flax_cae.studies import members as members_lib


def _score(result) -> float:
  """Validation PSNR of a tuning run; a diverged run ranks last."""
  if result.get('diverged_at_step') is not None or 'validation_psnr' not in result:
    return -math.inf
  return result['validation_psnr']


def tune_learning_rates(base, study, members, workdir, splits, together) -> dict:
  """Per member: short runs at (its learning rate x each of study.lr_factors), the rate
  with the best validation PSNR kept. Returns {member: (rate, [(rate, psnr)])}."""
  chosen = {}
  for name, configs in members:
    center = configs[0].optimizer.learning_rate
    jobs = []
    for f in study.lr_factors:
      c = copy.deepcopy(configs[0])
      c.optimizer.learning_rate = float(f'{center * f:.3g}')
      c.num_epochs = study.tune_epochs
      jobs.append((f'{c.optimizer.learning_rate:g}',
                   os.path.join(workdir, 'tuning', name, f'lr_{c.optimizer.learning_rate:g}'), c))
    results = members_lib.train_jobs(jobs, workdir, splits, together, f'tune_{name}_lr_')
    if results.get('preempted'):
      return {'preempted': True}
    tried = [(c.optimizer.learning_rate, _score(results[key])) for key, _, c in jobs]
    best = max(tried, key=lambda t: t[1])
    if best[1] == -math.inf:
      raise errors.DivergedError(
          f'every learning rate tried for study member {name!r} diverged ({[r for r, _ in tried]}); '
          'give it a smaller center rate in study.members or other study.lr_factors.')
    chosen[name] = (best[0], tried)
    logging.info('Study: %s learning rate %g (validation PSNR %.2f dB).', name, best[0], best[1])
  return chosen
