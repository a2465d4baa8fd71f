"""Small runs shared by the tests: the tiny default config, and reading what a run wrote."""

import json
import os

import jax
import numpy as np

from configs import default
from flax_cae.runtime.checkpoint import Reader


def tiny_config(data_dir, **overrides):
  """configs/default.py at test size: a small ImprovedCAE, 2 epochs of 4 steps."""
  c = default.get_config()
  c.data.data_dir = data_dir
  c.data.download = False
  c.model.update(latent_dim=16, widths=(8, 8, 16, 16), dropout_rate=0.1)
  c.batch_size = 40
  c.eval_batch_size = 8
  c.num_epochs = 2
  c.eval_every_epochs = 1
  c.checkpoint_every_epochs = 1
  c.log_every_seconds = 0.0  # log every call: per-step losses land in metrics.jsonl
  c.num_sample_images = 4
  for key, value in overrides.items():
    target = c
    *path, last = key.split('.')
    for p in path:
      target = target[p]
    target[last] = value
  return c


def read_metrics(workdir, split):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['split'] == split]


def final_params(workdir):
  ckpts = Reader(os.path.join(workdir, 'checkpoints'))
  state, meta = ckpts.restore_raw(ckpts.steps()[-1])
  ckpts.close()
  return state['params'], meta


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)
