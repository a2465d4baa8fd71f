"""Reading a workdir never harms it: evaluate/visualize's loading (also the study's scoring)
against a real training process that writes and deletes checkpoints all the while; the
training ends exactly as an uninterrupted run, and the readers never write, clean or delete."""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from launching import ROOT, env, start, tiny_flags
from flax_cae.evaluation import trained as evaluate
from flax_cae.runtime.errors import ConfigError
from runs import final_params

# 4 steps an epoch, a checkpoint after each, only the latest and the best kept: the run
# deletes a checkpoint at almost every save while the readers read.
EPOCHS = 24


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def flags(data_dir, workdir):
  return tiny_flags(data_dir, workdir, num_epochs=EPOCHS, keep_checkpoints=1)


def train(data_dir, workdir, readers=None) -> str:
  """The run to the end; `readers(workdir)` is called over and over while it trains."""
  proc = start(flags(data_dir, workdir))
  reads = 0
  try:
    while proc.poll() is None and readers is not None:
      reads += readers(workdir)
    out, _ = proc.communicate(timeout=300)
  finally:
    proc.kill()
  assert proc.returncode == 0, out[-3000:]
  return out, reads


def tool(*args, timeout=300):
  return subprocess.run([sys.executable, '-m', *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, env=env(1))


def test_readers_during_training_leave_it_bit_for_bit_unchanged(tmp_path, data_dir):
  reference = str(tmp_path / 'uninterrupted')
  train(data_dir, reference)
  seen = {'in_progress': 0, 'not_yet': 0, 'replaced': 0}

  def load(workdir):
    try:
      trained = evaluate.load_trained(workdir)
    except ConfigError as e:
      # Before the first checkpoint; or, on a busy machine, the run replaced its checkpoints
      # on every one of the reader's attempts (it says so and harms nothing either way).
      assert any(m in str(e) for m in ('has no checkpoint yet', 'holds no finished run',
                                        'replaced its checkpoints')), str(e)
      seen['not_yet'] += 1
      seen['replaced'] += 'replaced its checkpoints' in str(e)
      time.sleep(0.05)
      return 0
    assert trained.results['best_step'] % 4 == 0  # a whole epoch's checkpoint
    images = np.zeros((2, *trained.results['image_shape']), np.uint8)
    assert np.isfinite(np.asarray(trained.reconstruct(images))).all()
    # What the loader saw (the run may finish while this read goes on, so the folder's
    # listing afterwards would not say).
    seen['in_progress'] += not trained.finished
    return 1

  load(reference)  # compiles the reader's programs once, so reads during training are quick
  workdir = str(tmp_path / 'read')
  out, reads = train(data_dir, workdir, load)
  # Readers hammered the run while it trained, and read it mid-run or (on a busy machine,
  # where the run replaced its checkpoint on every attempt of a read) were refused in the
  # tool's one sentence; either way the run below is bit for bit the one never read.
  assert reads + seen['not_yet'] >= 5, (reads, seen)
  assert seen['in_progress'] >= 1 or seen['replaced'] >= 1, (reads, seen)
  assert 'half-written' not in out and 'Save failed' not in out and 'Traceback' not in out
  a, meta_a = final_params(reference)
  b, meta_b = final_params(workdir)
  assert meta_a['epoch'] == meta_b['epoch'] == EPOCHS
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  results = [json.load(open(os.path.join(d, 'results.json'))) for d in (reference, workdir)]
  for key in ('test_psnr', 'test_ssim', 'test_mse', 'best_step'):
    assert results[0][key] == results[1][key], key


def test_visualize_reads_a_run_in_progress_and_says_so(tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  proc = start(flags(data_dir, workdir) + ['--config.num_epochs=400'])
  try:
    ckpts = os.path.join(workdir, 'checkpoints')
    deadline = time.time() + 120
    while not (os.path.isdir(ckpts) and any(d.isdigit() for d in os.listdir(ckpts))):
      assert proc.poll() is None and time.time() < deadline
      time.sleep(0.1)
    out = tool('flax_cae.visualize', f'--workdir={workdir}', '--max_points=20',
               f'--out={tmp_path / "pictures"}')
    assert out.returncode == 0, out.stderr[-3000:]
    assert f'{workdir} is being trained now by process {proc.pid}' in out.stderr
    assert 'best checkpoint so far' in out.stderr
    assert (tmp_path / 'pictures' / 'tsne_2d.png').stat().st_size > 1000
    assert not os.path.exists(os.path.join(workdir, 'visualize'))  # --out: nothing in the run
    assert proc.poll() is None  # still training, unharmed
  finally:
    proc.terminate()
    out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0 and 'Stopped by SIGTERM' in out, out[-3000:]


def _locked_workdir(path, config_json='{}'):
  """A workdir whose lock this (live) test process holds: a run in progress to any reader."""
  os.makedirs(path / 'checkpoints')
  (path / 'config.json').write_text(config_json)
  (path / '.lock').write_text(json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                                          'since': 'now'}))


def test_a_run_without_a_checkpoint_yet_is_one_sentence(tmp_path):
  workdir = tmp_path / 'starting'
  config = json.dumps({'model': {'name': 'improved_cae'}, 'checkpoint_every_epochs': 5})
  _locked_workdir(workdir, config)
  out = tool('flax_cae.visualize', f'--workdir={workdir}')
  assert out.returncode == 2 and 'Traceback' not in out.stderr
  lines = [l for l in out.stderr.splitlines() if l.startswith('flax-cae: error:')]
  assert len(lines) == 1 and 'is being trained now by process' in lines[0]
  assert 'has no checkpoint yet' in lines[0] and 'checkpoint_every_epochs=5' in lines[0]
  assert sorted(os.listdir(workdir)) == ['.lock', 'checkpoints', 'config.json']
  assert os.listdir(workdir / 'checkpoints') == []


@pytest.fixture(scope='module')
def finished(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('finished') / 'run')
  proc = start(tiny_flags(data_dir, workdir))
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  return workdir


def test_readers_leave_a_half_written_checkpoint_alone(finished, tmp_path):
  """What looks half-written may be a live run's save in progress: a reader never removes it
  (only the run that holds the workdir's lock cleans up)."""
  tmp = os.path.join(finished, 'checkpoints', '999.orbax-checkpoint-tmp-1763900000000000')
  os.makedirs(os.path.join(tmp, 'state'))
  before = snapshot(finished)
  out = tool('flax_cae.visualize', f'--workdir={finished}', '--max_points=20',
             f'--out={tmp_path / "pictures"}')
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'half-written' not in out.stderr
  assert snapshot(finished) == before
  os.rmdir(os.path.join(tmp, 'state'))
  os.rmdir(tmp)


def test_a_single_run_without_its_checkpoints_folder_says_so(finished, tmp_path):
  copy = tmp_path / 'copy'
  os.makedirs(copy)
  for name in ('config.json', 'results.json'):
    (copy / name).write_text(open(os.path.join(finished, name)).read())
  out = tool('flax_cae.visualize', f'--workdir={copy}')
  lines = [l for l in out.stderr.splitlines() if l.startswith('flax-cae: error:')]
  assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
  assert 'has no checkpoints/ folder' in lines[0] and 'members trained together' not in lines[0]


def snapshot(directory):
  return sorted((os.path.relpath(os.path.join(d, f), directory),
                 os.stat(os.path.join(d, f)).st_mtime_ns)
                for d, dirs, files in os.walk(directory) for f in files + dirs)
