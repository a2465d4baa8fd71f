"""Bad input ends with one sentence, exit status 2 and the workdir's checkpoints untouched."""

import os
import subprocess
import sys

import pytest
from PIL import Image

import launching
from flax_cae.runtime import errors
from flax_cae.training import loop as train
from runs import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def launch(*flags):
  proc = subprocess.run([sys.executable, 'launch.py', *flags], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  errors_ = [l for l in proc.stderr.splitlines() if l.startswith('flax-cae: error:')]
  return proc.returncode, errors_, proc.stderr


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


BAD_FLAGS = [
    (['--config.model.name=resnet'], 'valid model names are: balle2017, base_cae, cae, conv_vae, fc_ae, improved_cae'),
    (['--config.optimizer.name=adamm'], 'valid optimizer names are:'),
    (['--config.loss.name=mae'], 'valid loss names are:'),
    (['--config.optimizer.schedule.name=cosine'], 'valid schedule names are:'),
    (['--config.data.name=imagenet'], 'valid data set names are: cifar10, cinic10'),
    (['--config.optimizer.learning_rate=-0.1'], 'learning_rate must be > 0'),
    (['--config.optimizer.learning_rate=0.0'], 'learning_rate must be > 0'),
    (['--config.batch_size=0'], 'batch_size must be a positive integer'),
    (['--config.num_epochs=-3'], 'num_epochs must be a positive integer'),
    (['--config.cpu_convolutions=mkl'], 'valid cpu_convolutions names are: eigen, xla'),
    (['--config.cpu_malloc=jemalloc'], 'valid cpu_malloc names are: keep, system'),
    (['--config.selection_metric=accuracy'], 'valid selection_metric names are: l1, loss, mse'),
    (['--config.early_stopping.patience=-1'], 'early_stopping.patience must be an integer >= 0'),
    (['--config.eval_every_epochs=0'], 'eval_every_epochs must be an integer >= 1'),
    (['--config.checkpoint_every_epochs=0'], 'checkpoint_every_epochs must be an integer >= 1'),
    (['--config.keep_checkpoints=-1'], 'keep_checkpoints must be an integer >= 1'),
    (['--config.num_sample_images=-1'], 'num_sample_images must be an integer >= 0'),
    (['--config.snapshot_every_epochs=-1'], 'snapshot_every_epochs must be an integer >= 0'),
    (['--config.model.widths=(0, 0, 0, 0)'], 'model.widths must be positive integers'),
    (['--config.model.name=rate_cae', '--config.model.rate=3'],
     'model.rate must be one of 2, 4, 8, 16'),
    (['--config.model.name=rate_cae', '--config.model.widths=(8, 8)'],
     'model.widths for rate_cae needs 3 entries'),
    (['--config.model.name=res_cae', '--config.model.blocks=-1'],
     'model.blocks must be an integer >= 0 (residual blocks per stage), got -1'),
    (['--config.model.name=res_cae', '--config.model.stage_blocks=(1, 2)'],
     'model.stage_blocks must be empty (model.blocks at every stage) or one integer >= 0 per '
     'stage of model.widths=(32, 64, 128), got (1, 2)'),
    (['--config.model.name=res_cae', '--config.model.latent_dim=30'],
     "model.latent_dim=30 is not a whole number of channels on res_cae's 7x7 code"),
    (['--config.model.norm=layer'], 'valid norm names are: batch, group'),
    (['--config.model.name=res_cae', '--config.model.code=flat'],
     "Unknown model.code 'flat'; valid model.code names are: dense, spatial"),
    (['--config.ema_decay=1.0'], 'ema_decay must be a number in [0, 1) (0 = off'),
    (['--config.augment=mirror'], "Unknown augment 'mirror'; valid augment names are: flip, flip_crop, none"),
    (['--config.model.name=balle2017', '--config.loss.rd_lambda=0'],
     'loss.rd_lambda must be a number > 0 (the weight of distortion against rate'),
    (['--config.model.name=lenet5'],  # the default config's loss is MSE
     "lenet5 is a classifier, trained on cross-entropy: loss.name='mse' does not apply"),
    (['--config.model.name=lenet5', '--config.loss.name=cross_entropy'],  # and it watches PSNR
     "Unknown early-stopping metric 'psnr'; valid early-stopping metric names are: accuracy, "
     'cross_entropy, loss'),
    (['--config=configs/no_such_config.py'], 'no_such_config.py'),
    (['--config.optimizer.learnin_rate=1'], 'Did you mean "learning_rate"'),
    (['--config.data.name=cifar10', '--config.data.download=False'],
     'needs cifar-10-python.tar.gz'),
    (['--config.data.name=lfw', '--config.data.download=False'],
     "needs lfw.tgz but the data set is not prepared in"),  # names TFDS's lfw too (test_lfw.py)
    (['--config.data.name=lfw', '--config.data.channels=2'],
     'channels=2 is not supported; set --config.data.channels to 1 (grayscale) or 3 (RGB)'),
]


@pytest.mark.parametrize('flags,expected', BAD_FLAGS, ids=[' '.join(f) for f, _ in BAD_FLAGS])
def test_bad_input_is_one_sentence_and_status_2(tmp_path, data_dir, flags, expected):
  rc, lines, stderr = launch(*flags, f'--workdir={tmp_path / "run"}',
                             f'--config.data.data_dir={data_dir}')
  assert rc == 2, stderr[-2000:]
  assert len(lines) == 1 and expected in lines[0], stderr[-2000:]
  assert 'Traceback' not in stderr
  assert not (tmp_path / 'run').exists()  # refused: no workdir left behind


def test_batch_size_the_devices_do_not_divide(tmp_path, data_dir):
  proc = subprocess.run(
      [sys.executable, 'launch.py', '--config.batch_size=6', f'--config.data.data_dir={data_dir}',
       f'--workdir={tmp_path}'], cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=launching.env(4))
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert ('flax-cae: error: batch_size=6 is not divisible by the 4 devices in use; choose a '
          'multiple of 4') in proc.stderr


def test_half_given_many_host_flags_are_one_sentence(tmp_path):
  code, errors_, _ = launch('--num_processes=2', f'--workdir={tmp_path}')
  assert code == 2 and len(errors_) == 1
  assert 'jax.distributed could not start' in errors_[0]
  assert '--coordinator_address, --num_processes and --process_id' in errors_[0]


def test_config_syntax_error_names_the_line(tmp_path):
  bad = tmp_path / 'bad_config.py'
  bad.write_text('def get_config(:\n  pass\n')
  rc, lines, stderr = launch(f'--config={bad}', f'--workdir={tmp_path / "run"}')
  assert rc == 2 and len(lines) == 1 and 'Traceback' not in stderr
  assert f'SyntaxError: invalid syntax at {bad}, line 1' in lines[0]


def test_debug_flag_shows_the_traceback(tmp_path):
  rc, lines, stderr = launch('--config.model.name=resnet', '--debug',
                             f'--workdir={tmp_path / "run"}')
  assert rc != 0 and 'Traceback' in stderr and 'ConfigError' in stderr


def test_unreadable_file_in_image_folder_is_named(tmp_path):
  root = tmp_path / 'images'
  (root / 'faces').mkdir(parents=True)
  Image.new('RGB', (8, 8), (200, 10, 10)).save(root / 'faces' / 'a.png')
  (root / 'faces' / 'b.png').write_text('not an image')  # an image by its name only
  rc, lines, stderr = launch('--config.data.name=image_folder', f'--config.data.source_dir={root}',
                             f'--config.data.data_dir={tmp_path / "tfds"}',
                             f'--workdir={tmp_path / "run"}')
  assert rc == 2 and len(lines) == 1, stderr[-2000:]
  assert 'b.png' in lines[0]


def snapshot(directory):
  return sorted((os.path.relpath(os.path.join(d, f), directory),
                 os.path.getmtime(os.path.join(d, f)))
                for d, _, files in os.walk(directory) for f in files)


def test_workdir_of_another_model_is_refused_and_kept(tmp_path, data_dir):
  workdir = tmp_path / 'run'
  train.train_and_evaluate(tiny_config(data_dir, num_epochs=1), str(workdir))
  before = snapshot(workdir / 'checkpoints')
  config_json = (workdir / 'config.json').read_text()
  rc, lines, stderr = launch(f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
                             '--config.model.latent_dim=32')
  assert rc == 2 and len(lines) == 1, stderr[-2000:]
  assert 'holds checkpoints of a different model' in lines[0] and 'latent_dim' in lines[0]
  assert snapshot(workdir / 'checkpoints') == before
  assert (workdir / 'config.json').read_text() == config_json


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
  # A normal first epoch (checkpointed), then a learning rate 1e30 times larger.
  workdir = tmp_path / 'run'
  config = tiny_config(data_dir, num_epochs=3, **{
      'optimizer.name': 'sgd', 'optimizer.schedule.name': 'step',
      'optimizer.schedule.decay_rate': 1e30, 'optimizer.schedule.decay_epochs': (1,)})
  with pytest.raises(errors.DivergedError, match=r'became (nan|inf).* at step \d+; the last good '
                     r'checkpoint \(step 4\) is kept'):
    train.train_and_evaluate(config, str(workdir))
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['4']
