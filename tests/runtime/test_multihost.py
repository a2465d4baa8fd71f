"""Many hosts for real: 2 processes x 2 CPU devices (jax.distributed, gloo collectives) on
localhost train exactly like 1 process x 4 devices, and their checkpoint restores in 1 process."""

import json
import os
import shutil
import signal
import time

import jax
import numpy as np
import pytest

from flax_cae.runtime import distributed
from flax_cae.training import loop as train
from launching import free_port, run_processes, start, tiny_flags
from runs import assert_trees_close, final_params, read_metrics, tiny_config


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.mark.slow  # (long: README, -m slow)
def test_two_processes_match_one(tmp_path, data_dir):
  """1 process x 4 devices, 2 processes x 2 devices with every split on the devices (each
  process loads its own block of rows), and 2 x 2 with every batch streamed from the host
  (each process reads its own rows of each batch): the same run three times."""
  runs = {}
  for label, n_proc, limit in (('1x4', 1, 2048), ('2x2', 2, 2048), ('2x2 streamed', 2, 0)):
    workdir = str(tmp_path / label.replace(' ', '_'))
    os.makedirs(workdir + '_logs')
    logs = run_processes(tiny_flags(data_dir, workdir, **{'data.device_memory_limit_mb': limit}),
                         n_proc, 4 // n_proc, workdir + '_logs')
    runs[label] = workdir
    if n_proc == 2:
      assert 'process 1 of 2, 2 local / 4 global devices' in logs[1]
    assert ('streamed from the host' in logs[0]) == (limit == 0)
  one = runs['1x4']
  # And 1 device in this process: the order does not depend on the device count either.
  single = str(tmp_path / '1x1')
  train.train_and_evaluate(tiny_config(data_dir), single)
  np.testing.assert_allclose([r['loss'] for r in read_metrics(one, 'train')],
                             [r['loss'] for r in read_metrics(single, 'train')], rtol=1e-4)
  params_one, meta_one = final_params(one)

  for label in ('2x2', '2x2 streamed'):
    two = runs[label]
    # Only process 0 writes: one row per step, not one per process.
    train_one, train_two = read_metrics(one, 'train'), read_metrics(two, 'train')
    assert [r['step'] for r in train_two] == list(range(1, 9))
    np.testing.assert_allclose([r['loss'] for r in train_two], [r['loss'] for r in train_one],
                               rtol=1e-5, err_msg=label)
    for split in ('validation', 'test'):
      a, b = read_metrics(one, split), read_metrics(two, split)
      assert [r['step'] for r in a] == [r['step'] for r in b]
      for ra, rb in zip(a, b):
        # Eval padding is masked: no example dropped or counted twice, on any host count.
        assert ra['count'] == rb['count'] == 20
        for key in ('loss', 'mse', 'psnr', 'ssim'):
          np.testing.assert_allclose(rb[key], ra[key], rtol=1e-4, atol=1e-4, err_msg=label)
    params_two, meta_two = final_params(two)
    assert meta_one['model'] == meta_two['model']
    # Conv/Dense biases feeding a BatchNorm get (mathematically) zero gradients, which Adam
    # turns into steps of either sign from float noise: they differ by ~5e-4 between 1 and 4
    # devices in one process too, and change nothing (BatchNorm subtracts them). All the
    # other parameters agree to ~2e-6 (measured); wrong rows on a host move them by ~1e-3.
    assert_trees_close(_without_layer_biases(params_two), _without_layer_biases(params_one),
                       rtol=1e-4, atol=1e-5)

  # A 2-process checkpoint restores in this (1-process, 1-device) pytest process: the run
  # resumes at its last step and re-evaluates its best checkpoint to the same numbers.
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(runs['2x2'], resumed)
  results = train.train_and_evaluate(tiny_config(data_dir), resumed)
  saved = json.load(open(os.path.join(runs['2x2'], 'results.json')))
  assert results['best_step'] == saved['best_step'] == 8
  for key in ('test_mse', 'test_psnr', 'validation_ssim'):
    np.testing.assert_allclose(results[key], saved[key], rtol=1e-4)


def _without_layer_biases(params):
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {jax.tree_util.keystr(path): x for path, x in flat
          if not (path[-1].key == 'bias' and 'BatchNorm' not in jax.tree_util.keystr(path))}


def test_one_machine_starts_nothing(monkeypatch):
  for var in ('SLURM_JOB_ID', 'OMPI_MCA_orte_hnp_uri', 'KUBERNETES_SERVICE_HOST'):
    monkeypatch.delenv(var, raising=False)
  assert distributed.detected_cluster() is None
  assert distributed.initialize('auto') is False
  assert distributed.initialize('off', coordinator_address='localhost:1') is False


def test_slurm_job_is_detected(monkeypatch):
  """JAX's own SLURM detector, fed a 2-task srun environment (nothing is started)."""
  for var, value in {'SLURM_JOB_ID': '7', 'SLURM_STEP_NODELIST': 'node[1-2]',
                     'SLURM_NTASKS': '2', 'SLURM_PROCID': '1', 'SLURM_LOCALID': '0'}.items():
    monkeypatch.setenv(var, value)
  assert distributed.detected_cluster() == ('SlurmCluster', 2)
  monkeypatch.setenv('SLURM_NTASKS', '1')  # a 1-task job is one machine
  assert distributed.detected_cluster() is None


def test_sigterm_on_one_host_stops_all_at_the_same_step(tmp_path, data_dir):
  """JAX's preemption service: host 1 alone gets SIGTERM; both hosts save one step and exit 0."""
  workdir = str(tmp_path / 'preempted')
  port = free_port()
  logs = [str(tmp_path / f'process_{i}.log') for i in range(2)]
  procs = [start(tiny_flags(data_dir, workdir, num_epochs=50) + [
      f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}'],
      n_devices=2, log_path=logs[i]) for i in range(2)]
  try:
    deadline = time.time() + 240
    while 'step 6/200' not in open(logs[0]).read():
      assert time.time() < deadline and procs[0].poll() is None, open(logs[0]).read()[-3000:]
      time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=240) for p in procs]
  finally:
    for p in procs:
      p.kill()
  texts = [open(path).read() for path in logs]
  assert codes == [0, 0], texts[1][-3000:]
  stopped = [int(t.split('Stopped by SIGTERM at step ')[1].split()[0]) for t in texts]
  assert stopped[0] == stopped[1] >= 6
  assert str(stopped[0]) in os.listdir(os.path.join(workdir, 'checkpoints'))
