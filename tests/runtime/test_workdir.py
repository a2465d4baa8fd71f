"""The workdir contract through launch.py: a resume under other settings is refused
with its checkpoints untouched, more epochs are allowed, one run at a time (a lock, taken
over when its process died), `~` in --workdir means the home folder; read-only folders, a
full disk while saving and image folders holding other files are one sentence or a warning."""

import glob
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flax_cae.training import loop as train
from flax_cae.training import resume
from flax_cae.runtime import errors as errors_lib
from data_fixtures import cifar_jpeg_tree
from test_errors import snapshot
from runs import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def launch(workdir, data_dir, *flags, env=None, max_file_bytes=None):
  """launch.py on the tiny default config (tests/training/test_loop.tiny_config, as flags).
  max_file_bytes: a file-size limit (RLIMIT_FSIZE) on the process, so writes past it fail
  as on a full disk (EFBIG instead of ENOSPC; Python ignores SIGXFSZ)."""
  from launching import TINY  # pylint: disable=g-import-not-at-top
  values = {**TINY, 'data.data_dir': data_dir}
  limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
           ) if max_file_bytes else None
  proc = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/default.py', f'--workdir={workdir}',
       *(f'--config.{k}={v}' for k, v in values.items()), *flags],
      cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=limit,
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
    (['--config.data.noise.kind=gaussian'], "'data.noise.kind': ('none', 'gaussian')"),
    (['--config.model.blocks=2'], "'model.blocks': (1, 2)"),
    (['--config.model.stage_blocks=(0, 1, 0, 0)'], "'model.stage_blocks': ([], [0, 1, 0, 0])"),
    (['--config.ema_decay=0.9'], "'ema_decay': (0.0, 0.9)"),  # its state holds no average
    (['--config.augment=flip'], "'augment': ('none', 'flip')"),
    (['--config.model.code=dense'], "'model.code': ('spatial', 'dense')"),
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


@pytest.mark.slow  # default-run time (CI's 15 minutes); `-m slow` runs it
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
  with pytest.raises(errors_lib.ConfigError, match=r"'loss.name': \('mse', 'l1'\).*'seed': \(0, 3\)"):
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


def read_only_folder(tmp_path):
  """A folder this process cannot write to: mode 555, or for root (which writes through
  folder modes) sysfs's /sys/kernel, which nobody can write to."""
  if os.geteuid() != 0:
    folder = tmp_path / 'read_only'
    folder.mkdir()
    folder.chmod(0o555)
    return folder
  try:
    open('/sys/kernel/flax_cae_probe', 'w').close()  # pylint: disable=consider-using-with
  except OSError:
    return Path('/sys/kernel')
  pytest.skip('running as root, which writes through folder modes, and /sys/kernel (read-only '
              'for everyone) is not mounted here: no read-only folder to test with')


@pytest.mark.parametrize('where', ['workdir', 'workdir/new', 'data_dir'])
def test_a_read_only_folder_is_one_sentence(tmp_path, where):
  read_only = read_only_folder(tmp_path)
  if where == 'data_dir':  # nothing prepared there yet: preparing would have to write
    rc, lines, stderr = launch(tmp_path / 'w', read_only)
    expected = f"data set 'lfw_subset' cannot be prepared in '{read_only}' ("
  else:
    target = read_only if where == 'workdir' else read_only / 'new'
    rc, lines, stderr = launch(target, str(tmp_path / 'tfds'))
    expected = f'--workdir={target} cannot be '
  assert rc == 2 and len(lines) == 1 and expected in lines[0], stderr[-2000:]
  assert 'you can write to' in lines[0] and 'Traceback' not in stderr
  assert not (tmp_path / 'w').exists()


def test_a_full_disk_while_saving_is_one_sentence_and_the_run_resumes(tmp_path, data_dir):
  workdir = tmp_path / 'run'
  assert launch(workdir, data_dir, '--config.num_epochs=1')[0] == 0
  kept = snapshot(workdir / 'checkpoints' / '4')
  no_cache = {'JAX_COMPILATION_CACHE_DIR': ''}  # the limit is for the checkpoint, not JAX's cache
  # A checkpoint's files are ~20 kB; metrics, logs and pictures of this run stay under 8 kB.
  rc, lines, stderr = launch(workdir, data_dir, '--config.num_epochs=2', env=no_cache,
                             max_file_bytes=8192)
  assert rc == 2 and len(lines) == 1, stderr[-3000:]
  assert (f'the checkpoint of step 8 could not be written to {workdir / "checkpoints"} (File too '
          'large); the checkpoint of step 4 is kept' in lines[0]), lines[0]
  assert 'Traceback' not in stderr and 'Exception ignored' not in stderr
  assert len(stderr.splitlines()) < 30, stderr  # was ~1,270 lines of orbax and asyncio tracebacks
  assert snapshot(workdir / 'checkpoints' / '4') == kept
  assert not (workdir / '.lock').exists()
  # With room again, the same command resumes from step 4 and finishes.
  rc, lines, stderr = launch(workdir, data_dir, '--config.num_epochs=2')
  assert rc == 0, stderr[-3000:]
  assert 'The checkpoint of step 8' in stderr and 'was left half-written' in stderr
  assert 'Resumed from the checkpoint at step 4' in stderr
  assert json.loads((workdir / 'results.json').read_text())['total_steps'] == 8


def image_folder_flags(root, data_dir, **sizes):
  return [f'--config.data.data_dir={data_dir}', '--config.data.name=image_folder',
          f'--config.data.source_dir={root}', '--config.data.image_size=(32, 32)',
          '--config.data.channels=3', '--config.batch_size=8', '--config.num_epochs=1',
          *(f'--config.data.{k}={v}' for k, v in sizes.items())]


def test_image_folder_other_files_are_skipped_and_a_grown_folder_names_its_prepared_copy(
    tmp_path):
  full = cifar_jpeg_tree(tmp_path / 'all', per_class=4)  # real CIFAR-10 JPEGs, 10 classes
  root = tmp_path / 'photos'
  for cls in sorted(os.listdir(full)):
    (root / cls).mkdir(parents=True)
    for name in sorted(os.listdir(full / cls))[:2]:
      shutil.copy(full / cls / name, root / cls / name)
  (root / 'airplane' / 'README.txt').write_text('Where these photos came from.')
  data_dir = tmp_path / 'tfds'
  sizes = {'validation_size': 4, 'test_size': 4}
  rc, lines, stderr = launch(tmp_path / 'w1', data_dir, *image_folder_flags(root, data_dir, **sizes))
  assert rc == 0, stderr[-3000:]
  assert 'Skipped 1 file(s) under' in stderr and 'airplane/README.txt' in stderr
  assert json.loads((tmp_path / 'w1' / 'results.json').read_text())['eval_split'] == 'test'

  for cls in sorted(os.listdir(full)):  # the folder grows: 20 -> 40 images
    for name in sorted(os.listdir(full / cls))[2:]:
      shutil.copy(full / cls / name, root / cls / name)
  prepared = glob.glob(str(data_dir / 'flax_cae_image_folder' / 'photos_*' / '*'))
  assert len(prepared) == 1
  rc, lines, stderr = launch(tmp_path / 'w2', data_dir, *image_folder_flags(
      root, data_dir, validation_size=12, test_size=8))
  assert rc == 2 and len(lines) == 1, stderr[-3000:]
  assert 'whose train split has 20 images' in lines[0], lines[0]
  assert (f"image folder '{root}' now holds 40 images but its prepared copy holds 20; "
          f"delete '{prepared[0]}' to prepare the folder again" in lines[0]), lines[0]
  assert 'Traceback' not in stderr


def test_a_field_added_later_compares_against_the_value_older_runs_had():
  """A run recorded before ema_decay (or model.norm, ...) existed ran with ADDED_FIELDS'
  values: resuming it with the field turned on is a difference (refused, never merged; its
  checkpoints lack the state the field needs), with the old value it is none."""
  saved = {'optimizer.name': 'adam'}  # no ema_decay, model.norm: written before they existed
  assert resume.config_diff(saved, {'optimizer.name': 'adam', 'ema_decay': 0.9,
                                   'model.norm': 'batch'}) == {'ema_decay': (0.0, 0.9)}
  assert resume.config_diff(saved, {'optimizer.name': 'adam', 'ema_decay': 0.0,
                                   'model.norm': 'group'}) == {'model.norm': ('batch', 'group')}
  assert resume.config_diff(saved, {'optimizer.name': 'adam', 'ema_decay': 0.0}) == {}


def test_a_classifier_written_before_its_loss_had_to_be_cross_entropy_still_resumes():
  """Classifiers always trained on cross-entropy; runs written before loss.name had to say so
  recorded the default 'mse'. Their loss fields are not compared; an autoencoder's still are."""
  saved = {'model.name': 'lenet5', 'loss.name': 'mse', 'optimizer.name': 'adam'}
  now = {'model.name': 'lenet5', 'loss.name': 'cross_entropy', 'optimizer.name': 'adam'}
  assert resume.config_diff(saved, now) == {}
  assert resume.config_diff(saved, {**now, 'optimizer.name': 'sgd'}) == {
      'optimizer.name': ('adam', 'sgd')}
  cae = {'model.name': 'cae', 'loss.name': 'mse'}
  assert resume.config_diff(cae, {**cae, 'loss.name': 'l1'}) == {'loss.name': ('mse', 'l1')}
