"""Named random streams: each use of randomness draws from its own stream of the run's seed.

`key(seed, 'dropout', step)` is fold_in(fold_in(key(seed), id of 'dropout'), step): a
function of (seed, stream, index) only, so a resumed run draws exactly the numbers an
uninterrupted one would, and no two streams share a key (before, the dropout key of step
s and the data order of epoch e were both fold_in(key(seed), .), equal whenever s = e).
Later tasks add theirs here (a denoiser's noise, a VAE's samples).
"""

import contextlib

import jax

# Stream ids: fixed forever (changing one changes every run's numbers).
STREAMS = {'init': 0, 'data_order': 1, 'dropout': 2, 'noise': 3, 'sample': 4, 'augment': 5}


def key(seed, stream: str, index=0) -> jax.Array:
  """The key of draw `index` (a step, an epoch) of `stream`; traceable in seed and index."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), STREAMS[stream]), index)


def context():
  """The context every compiled step runs in. Partitionable threefry (JAX's default) lets
  each device draw only its shard of the dropout masks, but XLA's CPU compiler takes ~10 s
  more per run on it; on CPU we use the classic stream. Either way the numbers do not
  depend on the device count. Whatever draws the same numbers as a run (the evaluation's
  noise for the classical baselines) draws them in this context too."""
  if jax.default_backend() != 'cpu':
    return contextlib.nullcontext()  # JAX's default, whatever its flag is called
  return jax.threefry_partitionable(False)
