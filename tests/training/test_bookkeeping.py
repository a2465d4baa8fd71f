"""The loop's bookkeeping: a train row at every evaluation, runs without a test
or validation split, the kept model chosen by the configured metric, independent random
streams, the learning rate of the last update, and nothing repeated or leaked per run."""

import json
import os
import threading
import time
import tomllib

import jax
import numpy as np
import pytest

from flax_cae.runtime import streams
from flax_cae.training import loop as train
from flax_cae.training import run as run_lib
from flax_cae.runtime import errors as errors_lib
from flax_cae.data import pipeline
from test_errors import launch
from runs import read_metrics, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def test_train_rows_learning_rate_and_caller_config(tmp_path, data_dir):
  """A train row at every evaluation (the default run logs every 10 s but evaluates every
  few epochs: before, each stretch's loss was dropped at the evaluation and one train row
  was left); its learning rate is that of the last update applied (before: the next
  step's); the caller's config is not written to (before: eval_batch_size was)."""
  c = tiny_config(data_dir, num_epochs=3, log_every_seconds=1e6, eval_batch_size=0, **{
      'optimizer.schedule': {'name': 'step', 'decay_rate': 0.1, 'decay_epochs': (1,),
                             'warmup_epochs': 0.0, 'end_value_factor': 0.0}})
  train.train_and_evaluate(c, str(tmp_path))
  train_rows, val_rows = read_metrics(str(tmp_path), 'train'), read_metrics(str(tmp_path), 'validation')
  assert [r['step'] for r in train_rows] == [r['step'] for r in val_rows] == [4, 8, 12]
  assert all(np.isfinite(r['loss']) and r['images_per_second'] > 0 for r in train_rows)
  # Steps 1-4 (epoch 1) use 1e-3; the row written after step 4 shows that, not 1e-4.
  rates = [r['learning_rate'] for r in train_rows]
  assert rates == pytest.approx([1e-3, 1e-4, 1e-4])
  assert c.eval_batch_size == 0


@pytest.mark.slow  # default-run time (CI's 15 minutes); `-m slow` runs it
def test_no_test_split_reports_validation(tmp_path, data_dir):
  rc, lines, stderr = launch('--config=configs/default.py', f'--workdir={tmp_path}',
                             *_tiny_flags(data_dir, **{'data.test_size': 0}))
  assert rc == 0, stderr[-3000:]
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['eval_split'] == 'validation' and 'test_psnr' not in results
  assert np.isfinite(results['validation_psnr'])
  md = (tmp_path / 'results.md').read_text()
  assert 'validation PSNR (dB)' in md and 'no test split' in md


def test_no_validation_split_keeps_the_last_model(tmp_path, data_dir):
  rc, lines, stderr = launch('--config=configs/default.py', f'--workdir={tmp_path}',
                             *_tiny_flags(data_dir, **{'data.validation_size': 0}))
  assert rc == 0, stderr[-3000:]
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['best_step'] == results['total_steps'] == 8
  assert results['selection_metric'] is None and np.isfinite(results['test_psnr'])
  assert read_metrics(str(tmp_path), 'validation') == []


def test_no_validation_split_refuses_early_stopping_before_training(tmp_path, data_dir):
  rc, lines, stderr = launch('--config=configs/default.py', f'--workdir={tmp_path}',
                             *_tiny_flags(data_dir, **{'data.validation_size': 0,
                                                       'early_stopping.patience': 2}))
  assert rc == 2 and len(lines) == 1 and 'needs a validation split' in lines[0], stderr[-2000:]
  assert not (tmp_path / 'checkpoints').exists()


def test_kept_model_follows_the_selection_metric(tmp_path, data_dir):
  c = tiny_config(data_dir, num_epochs=4, **{'loss.name': 'ssim', 'selection_metric': 'loss'})
  results = train.train_and_evaluate(c, str(tmp_path))
  vals = read_metrics(str(tmp_path), 'validation')
  assert results['selection_metric'] == 'loss'
  assert results['best_step'] == min(vals, key=lambda r: r['loss'])['step']
  assert results['validation_loss'] == pytest.approx(min(r['loss'] for r in vals), rel=1e-4)
  # The default follows early stopping's metric.
  assert run_lib.selection_metric(tiny_config(data_dir, **{'early_stopping.metric': 'ssim'})) == 'ssim'


def test_random_streams_are_independent():
  """Before, the dropout key of step s and the data order of epoch e were both
  fold_in(key(seed), .): the same key whenever s = e."""
  for i in range(4):
    keys = {name: jax.random.key_data(streams.key(0, name, i)).tolist() for name in streams.STREAMS}
    assert len({json.dumps(v) for v in keys.values()}) == len(streams.STREAMS)
  order = np.asarray(pipeline.epoch_permutation(0, 3, 50, pipeline.make_mesh()))
  assert not np.array_equal(order, np.asarray(jax.random.permutation(streams.key(0, 'dropout', 3), 50)))
  # Still functions of (seed, index) only: a resume draws the same numbers.
  assert np.array_equal(order, np.asarray(pipeline.epoch_permutation(0, 3, 50, pipeline.make_mesh())))


def test_sample_images_compiled_once(tmp_path, data_dir):
  run = run_lib.create_run(tiny_config(data_dir), str(tmp_path))
  first = run.trainer.sample_images(run.splits['validation'], 4)
  compiled = dict(run.trainer._compiled)  # pylint: disable=protected-access
  second = run.trainer.sample_images(run.splits['validation'], 4)
  assert run.trainer._compiled == compiled and np.array_equal(first, second)  # pylint: disable=protected-access
  train.close(run)


def test_prefetcher_stops(tmp_path, data_dir):
  def slow(i):
    time.sleep(0.01)
    return i
  p = pipeline.Prefetcher(slow, range(1000))
  assert p.get() == 0
  p.close()
  assert not p._thread.is_alive()  # pylint: disable=protected-access
  # A streamed run that ends mid-epoch (here: diverged) leaves no reader thread behind.
  c = tiny_config(data_dir, **{'data.device_memory_limit_mb': 0, 'optimizer.learning_rate': 1e9,
                               'model.batch_norm': False})
  with pytest.raises(errors_lib.DivergedError):
    train.train_and_evaluate(c, str(tmp_path))
  assert not [t for t in threading.enumerate() if t.name == pipeline.PREFETCH_THREAD]


def test_license_is_an_spdx_string():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    assert tomllib.load(f)['project']['license'] == 'Apache-2.0'


def _tiny_flags(data_dir, **overrides):
  from launching import TINY  # pylint: disable=g-import-not-at-top
  values = {**TINY, 'data.data_dir': data_dir, **overrides}
  return [f'--config.{k}={v}' for k, v in values.items()]
