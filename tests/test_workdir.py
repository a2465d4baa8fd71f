"""The workdir contract through launch.py (issue 17): a resume under other settings is refused
with its checkpoints untouched, more epochs are allowed, one run at a time (a lock, taken
over when its process died), and `~` in --workdir means the home folder."""

import json
import os
import socket
import subprocess
import sys

import pytest

from flax_cae import train
from test_errors import snapshot
from test_training import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def launch(workdir, data_dir, *flags, env=None):
  """launch.py on the tiny default config (tests/test_training.tiny_config, as flags)."""
  from launching import TINY  # pylint: disable=g-import-not-at-top
  values = {**TINY, 'data.data_dir': data_dir}
  proc = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/default.py', f'--workdir={workdir}',
       *(f'--config.{k}={v}' for k, v in values.items()), *flags],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu', **(env or {})))
  lines = [l for l in proc.stderr.splitlines() if l.startswith('flax-cae: error:')]
  return proc.returncode, lines, proc.stderr


@pytest.fixture(scope='module')
def trained(tmp_path_factory, data_dir):
  """A workdir trained for 2 epochs (8 steps), as launch.py's TINY flags describe it."""
  workdir = tmp_path_factory.mktemp('trained') / 'run'
  rc, _, stderr = launch(workdir, data_dir)
  assert rc == 0, stderr[-3000:]
  return workdir


REFUSED = [
    (['--config.optimizer.name=sgd'], "'optimizer.name': ('adam', 'sgd')"),
    (['--config.data.validation_size=30', '--config.data.test_size=30'],
     "'data.test_size': (20, 30)"),
    (['--config.batch_size=20'], "'batch_size': (40, 20)"),
    (['--config.model.activation=tanh'], "'model.activation': ('leaky_relu', 'tanh')"),
    (['--config.num_epochs=1'], 'has already trained 2 epochs, more than num_epochs=1'),
]


@pytest.mark.parametrize('flags,expected', REFUSED, ids=[' '.join(f) for f, _ in REFUSED])
def test_resume_under_other_settings_is_refused(trained, data_dir, flags, expected):
  before = snapshot(trained / 'checkpoints')
  files = {name: (trained / name).read_text() for name in ('config.json', 'results.json',
                                                            'metrics.jsonl')}
  rc, lines, stderr = launch(trained, data_dir, *flags)
  assert rc == 2 and len(lines) == 1 and expected in lines[0], stderr[-2000:]
  assert 'Traceback' not in stderr
  assert snapshot(trained / 'checkpoints') == before
  assert {name: (trained / name).read_text() for name in files} == files
  assert not (trained / '.lock').exists()


def test_more_epochs_continue_the_run(tmp_path, data_dir):
  workdir = tmp_path / 'run'
  assert launch(workdir, data_dir)[0] == 0
  rc, _, stderr = launch(workdir, data_dir, '--config.num_epochs=3', '--config.eval_every_epochs=3')
  assert rc == 0, stderr[-3000:]
  assert 'Resumed from the checkpoint at step 8' in stderr
  results = json.loads((workdir / 'results.json').read_text())
  assert results['total_steps'] == 12


def test_longer_run_under_a_length_dependent_schedule_is_refused(tmp_path, data_dir):
  workdir = tmp_path / 'run'
  cosine = '--config.optimizer.schedule.name=warmup_cosine'
  assert launch(workdir, data_dir, cosine)[0] == 0
  before = snapshot(workdir / 'checkpoints')
  rc, lines, stderr = launch(workdir, data_dir, cosine, '--config.num_epochs=3')
  assert rc == 2 and len(lines) == 1 and 'whose shape depends on the run' in lines[0], stderr
  assert snapshot(workdir / 'checkpoints') == before


def test_a_workdir_in_use_is_refused(trained, data_dir):
  lock = trained / '.lock'
  lock.write_text(json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                              'since': '2026-12-03T12:00:00'}))
  try:
    before = snapshot(trained / 'checkpoints')
    rc, lines, stderr = launch(trained, data_dir)
    assert rc == 2 and len(lines) == 1, stderr[-2000:]
    assert f'is in use by process {os.getpid()} on host {socket.gethostname()}' in lines[0]
    assert snapshot(trained / 'checkpoints') == before and lock.exists()
  finally:
    lock.unlink()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, data_dir):
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / '.lock').write_text(json.dumps({'pid': dead.pid, 'host': socket.gethostname()}))
  rc, _, stderr = launch(workdir, data_dir, '--config.num_epochs=1')
  assert rc == 0, stderr[-3000:]
  assert 'which has ended; taking it over' in stderr
  assert not (workdir / '.lock').exists()  # released at the end


def test_tilde_in_workdir_is_the_home_folder(tmp_path, data_dir):
  rc, _, stderr = launch('~/runs/x', data_dir, '--config.num_epochs=1',
                         env={'HOME': str(tmp_path)})
  assert rc == 0, stderr[-3000:]
  assert (tmp_path / 'runs' / 'x' / 'results.json').is_file()
  assert not (tmp_path / '~').exists() and not os.path.exists(os.path.join(ROOT, '~'))


def test_refused_config_leaves_no_workdir(tmp_path, data_dir):
  rc, lines, _ = launch(tmp_path / 'new', data_dir, '--config.eval_every_epochs=0')
  assert rc == 2 and 'eval_every_epochs must be an integer >= 1' in lines[0]
  assert not (tmp_path / 'new').exists()


def test_in_process_resume_check_names_every_key(tmp_path, data_dir):
  train.train_and_evaluate(tiny_config(data_dir, num_epochs=1), str(tmp_path))
  with pytest.raises(train.ConfigError, match=r"'loss.name': \('mse', 'l1'\).*'seed': \(0, 3\)"):
    train.train_and_evaluate(tiny_config(data_dir, num_epochs=1, seed=3, **{'loss.name': 'l1'}),
                             str(tmp_path))


BAD_CONFIG_FILES = [
    ('import no_such_module\ndef get_config():\n  return None\n',
     "ModuleNotFoundError: No module named 'no_such_module"),
    ('def get_config():\n  raise RuntimeError("boom")\n', 'RuntimeError: boom'),
    ('def get_config():\n  return {"seed": 0}\n', 'returned a dict, not an ml_collections.ConfigDict'),
    ('def get_config():\n  return None\n', 'returned None'),
    ('seed: 0\nmodel:\n  name: cae\n', 'SyntaxError: invalid syntax'),
    ('from configs import default\ndef get_config():\n  c = default.get_config()\n'
     '  del c["loss"]\n  return c\n', "the config has no 'loss' section"),
]


@pytest.mark.parametrize('text,expected', BAD_CONFIG_FILES,
                         ids=['missing import', 'raises', 'dict', 'None', 'YAML', 'no loss'])
def test_config_files_that_load_but_are_wrong(tmp_path, text, expected):
  path = tmp_path / 'bad_config.py'
  path.write_text(text)
  proc = subprocess.run([sys.executable, 'launch.py', f'--config={path}',
                         f'--workdir={tmp_path / "w"}'], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  lines = [l for l in proc.stderr.splitlines() if l.startswith('flax-cae: error:')]
  assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr and not (tmp_path / 'w').exists()


def test_config_argument_error_keeps_its_reason(tmp_path):
  proc = subprocess.run([sys.executable, 'launch.py', '--config=configs/default.py:extra',
                         f'--workdir={tmp_path / "w"}'], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 2
  assert 'get_config() takes 0 positional arguments but 1 was given' in proc.stderr.splitlines()[-1]


@pytest.mark.parametrize('where', ['workdir', 'workdir/under', 'data_dir'])
def test_a_file_where_a_folder_belongs(tmp_path, data_dir, where):
  a_file = tmp_path / 'a_file'
  a_file.write_text('not a folder')
  if where == 'data_dir':
    rc, lines, stderr = launch(tmp_path / 'w', data_dir, f'--config.data.data_dir={a_file}')
    expected = f'data.data_dir={a_file} cannot be used (File exists)'
  else:
    target = a_file if where == 'workdir' else a_file / 'under'
    rc, lines, stderr = launch(target, data_dir)
    expected = f'--workdir={target} cannot be used'
  assert rc == 2 and len(lines) == 1 and expected in lines[0], stderr[-2000:]
  assert 'Traceback' not in stderr and a_file.read_text() == 'not a folder'
