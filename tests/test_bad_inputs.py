"""Bad and unusual inputs on the studies, the tools and the command line, through the commands
a user types: each ends as one sentence naming the field (or member, or flag) and what is
allowed, exit status 2, no traceback, and nothing written (the single run's own cases:
test_errors.py)."""

import json
import os
import subprocess
import sys

import pytest

from launching import ROOT, env, start, tiny_flags

S3 = '--config=configs/studies/s3_faces.py'  # bundled data (scikit-image's LFW subset)
S2 = '--config=configs/studies/s2_compression_rate.py'  # run here on the LFW subset


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def run(args, module=None, timeout=300):
  """(status, the stderr lines that start with 'flax-cae: error:', stderr)."""
  command = [sys.executable, *(['-m', module] if module else ['launch.py']), *args]
  proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                        env=env(1))
  lines = [l for l in proc.stderr.splitlines() if l.startswith('flax-cae: error:')]
  return proc.returncode, lines, proc.stderr


def assert_one_sentence(result, *expected):
  code, lines, stderr = result
  assert code == 2, stderr[-3000:]
  assert len(lines) == 1, stderr[-3000:]
  assert 'Traceback' not in stderr and 'FATAL' not in stderr
  for text in expected:
    assert text in lines[0], lines[0]


SINGLE_RUN = [
    # A loss the model's task cannot use.
    (['--config.model.name=lenet5', '--config.loss.name=ssim',
      '--config.early_stopping.metric=accuracy'],
     ["lenet5 is a classifier, trained on cross-entropy: loss.name='ssim' does not apply",
      '--config.loss.name=cross_entropy']),
    (['--config.model.name=lenet5', '--config.loss.name=bce',
      '--config.early_stopping.metric=accuracy'], ["loss.name='bce' does not apply"]),
    (['--config.loss.name=cross_entropy'], ["Unknown loss 'cross_entropy'; valid loss names"]),
    (['--config.model.name=balle2017', '--config.loss.name=cross_entropy'],
     ["Unknown loss 'cross_entropy'"]),
    # Images too small for SSIM: refused before training, naming the field.
    (['--config.data.name=lfw', '--config.data.image_size=(7, 7)'],
     ['7x7 pixels are smaller than the 11x11 window SSIM', '--config.data.image_size']),
    (['--config.data.name=image_folder', '--config.data.source_dir=/nonexistent',
      '--config.data.image_size=(10, 40)'], ['10x40 pixels are smaller than the 11x11']),
    # Values of the wrong type, said once, in the user's terms.
    (['--config.batch_size=abc'],
     ['--config.batch_size=abc is not an integer; give a whole number, e.g. '
      '--config.batch_size=32.']),
    (['--config.num_epochs=1.5'], ['--config.num_epochs=1.5 is not an integer']),
    (['--config.optimizer.learning_rate=1e'],
     ['--config.optimizer.learning_rate=1e is not a number']),
    (['--config.data.download=maybe'], ['--config.data.download=maybe is not true or false']),
    (['--config.model.widths=(32, 64'],
     ['--config.model.widths=(32, 64 has an unclosed "("', 'give a tuple in quotes']),
    (['--config.model.skips=[1, 2))'], ['has a ")" that closes nothing']),
    # Out-of-range numbers.
    (['--config.data.noise.kind=gaussian', '--config.data.noise.sigma=1e9'],
     ['data.noise.sigma must be a number in (0, 1]']),
    (['--config.data.noise.sigma=-0.1'], ['data.noise.sigma must be a number in (0, 1]']),
    (['--config.data.noise.kind=salt_pepper', '--config.data.noise.amount=2.0'],
     ['data.noise.amount must be in (0, 1]']),
    # A model that cannot fit the device: counted before anything is allocated.
    (['--config.model.name=fc_ae', '--config.model.latent_dim=100000000'],
     ['fc_ae here has 102,500,641,649 parameters', 'make the model smaller']),
    # A member flag without a study.
    (['--config.study.members.cae.model.latent_dim=32'], ['this config is not a study']),
]


@pytest.mark.parametrize('flags,expected', SINGLE_RUN, ids=[' '.join(f) for f, _ in SINGLE_RUN])
def test_single_run_inputs(tmp_path, data_dir, flags, expected):
  result = run([*flags, f'--workdir={tmp_path / "run"}', f'--config.data.data_dir={data_dir}',
                '--config.data.download=False'][::1])
  assert_one_sentence(result, *expected)
  assert not (tmp_path / 'run').exists()


STUDY = [
    (['--config.study.only=fc_ae,fc_ae'], ['study.only names fc_ae more than once']),
    (['--config.study.only='], ['study.only is empty', 'leave the flag out to train them all']),
    (['--config.study.only=fc_ae,nope'], ["Unknown study member 'nope'"]),
    (['--config.study.x_axis=model.rate'],
     ['study.x_axis=model.rate is the same for every member trained here (8)']),
    (['--config.study.x_axis=model.rates'], ["study.x_axis='model.rates' is not a config field"]),
    (['--config.study.train_together=yes'],
     ['study.train_together=yes, but no two members here can share one compiled program',
      "'fc_ae' and 'cae' differ in {'model.name': ('fc_ae', 'cae')"]),
    (['--config.study.train_together=yes', '--config.study.only=cae'],
     ['study.train_together=yes, but this study trains a single run']),
    (['--config.study.train_together=sometimes'], ["Unknown study.train_together 'sometimes'"]),
    (['--config.study.tune_learning_rate=maybe'],
     ['--config.study.tune_learning_rate=maybe is not true or false']),
    (['--config.study.num_grid_images=0'], ['study.num_grid_images must be a positive integer']),
    (['--config.study.num_seeds=abc'], ['--config.study.num_seeds=abc is not an integer']),
    # Member fields: any field of the base config, named as the member's own.
    (['--config.study.members.cae.model.widths=(32, -64, 128)'],
     ["study member 'cae': model.widths must be positive integers",
      '--config.study.members.cae.model.widths=']),
    (['--config.study.members.cae.num_epochs=0'],
     ["study member 'cae': num_epochs must be a positive integer",
      '--config.study.members.cae.num_epochs=N']),
    (['--config.study.members.fc_ae.optimizer.learning_rate=-1.0'],
     ["study member 'fc_ae': ", 'learning_rate must be > 0']),
    (['--config.study.members.cae.model.latent_dim=abc'],
     ['--config.study.members.cae.model.latent_dim=abc is not an integer', 'latent_dim=64']),
    (['--config.study.members.cae.model.latnt_dim=3'],
     ["'model.latnt_dim' is not a field of the config (did you mean 'model.latent_dim'?)"]),
    (['--config.study.members.nope.model.latent_dim=3'],
     ["there is no study member 'nope'; valid study member names are: cae, cae_denoise"]),
    (['--config.study.members.cae.model=3'], ["'model' is not a field of the config"]),
    # Data a study cannot read: refused with no study workdir left behind.
    (['--config.data.name=image_folder', '--config.data.source_dir=/nonexistent'],
     ["Image folder '/nonexistent' does not exist"]),
    (['--config.data.name=cifar10', '--config.data.validation_size=20'],
     ['needs cifar-10-python.tar.gz']),
]


@pytest.mark.parametrize('flags,expected', STUDY, ids=[' '.join(f) for f, _ in STUDY])
def test_study_inputs(tmp_path, data_dir, flags, expected):
  result = run([S3, f'--workdir={tmp_path / "study"}', f'--config.data.data_dir={data_dir}',
                '--config.data.download=False', *flags])
  assert_one_sentence(result, *expected)
  assert not (tmp_path / 'study').exists()


@pytest.fixture(scope='module')
def finished(data_dir, tmp_path_factory):
  """A finished single run (the tiny default: an autoencoder)."""
  workdir = str(tmp_path_factory.mktemp('finished') / 'run')
  proc = start(tiny_flags(data_dir, workdir, num_epochs=1))
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  return workdir


def test_an_autoencoder_as_the_study_classifier_names_the_study_field(tmp_path, data_dir,
                                                                     finished):
  result = run([S2, f'--workdir={tmp_path / "study"}', f'--config.data.data_dir={data_dir}',
                '--config.data.name=lfw_subset', '--config.data.validation_size=20',
                '--config.data.test_size=20', '--config.study.only=rate_2', '--config.study.x_axis=',
                f'--config.study.evals.classifier.workdir={finished}'])
  assert_one_sentence(result, f'--config.study.evals.classifier.workdir={finished} holds a '
                      'reconstruction model (improved_cae), not a classifier')
  assert not (tmp_path / 'study').exists()


def test_a_study_and_a_single_run_never_share_a_workdir(tmp_path, data_dir, finished):
  before = sorted(os.listdir(finished))
  assert_one_sentence(run([S3, f'--workdir={finished}', f'--config.data.data_dir={data_dir}']),
                      f'--workdir={finished} holds a single run', 'give a new --workdir')
  assert sorted(os.listdir(finished)) == before
  study = tmp_path / 'study'
  os.makedirs(study / 'members' / 'cae')
  (study / 'study.json').write_text(json.dumps({'name': 's3_faces'}))
  assert_one_sentence(run(tiny_flags(data_dir, str(study))), 'holds a study',
                      'WORKDIR/members/NAME')
  (study / 'study.json').write_text(json.dumps({'name': 's1_losses'}))
  assert_one_sentence(run([S3, f'--workdir={study}', f'--config.data.data_dir={data_dir}']),
                      "holds the study 's1_losses', not 's3_faces'")
  assert sorted(os.listdir(study)) == ['members', 'study.json']


def test_a_member_may_set_any_field_of_the_base_config(tmp_path, data_dir):
  study = tmp_path / 'study'
  code, lines, stderr = run([S3, f'--workdir={study}', f'--config.data.data_dir={data_dir}',
                             '--config.study.only=cae', '--config.num_epochs=1',
                             '--config.study.members.cae.model.latent_dim=32',
                             '--config.study.members.cae.optimizer.b1=0.8'])
  assert code == 0 and not lines, stderr[-3000:]
  config = json.load(open(study / 'members' / 'cae' / 'config.json'))
  assert config['model']['latent_dim'] == 32 and config['model']['widths'] == [32, 64, 128]
  assert config['optimizer']['b1'] == 0.8
  assert json.load(open(study / 'members' / 'cae' / 'results.json'))['bottleneck_floats'] == 32


def test_a_member_flag_sets_that_member_only():
  """S3's two denoising members share one noise setting in the config file; a flag setting one
  member's field leaves the other's as it was."""
  from configs.studies import s3_faces  # pylint: disable=g-import-not-at-top
  from flax_cae.runtime import cli
  from flax_cae.studies import plan as study  # pylint: disable=g-import-not-at-top
  config = s3_faces.get_config()
  argv = ['launch.py', '--config.study.members.cae_denoise.data.noise.sigma=0.3', '--debug']
  cli.apply_member_flags(config, cli.take_member_flags(argv))
  assert argv == ['launch.py', '--debug']
  _, _, members = study.plan(config)
  sigma = {name: configs[0].data.noise.sigma for name, configs in members}
  assert sigma == {'fc_ae': 0.1, 'cae': 0.1, 'fc_ae_denoise': 0.1, 'cae_denoise': 0.3}


def test_train_together_yes_is_accepted_where_some_runs_can_share():
  """Different models cannot share a program, but each one's seeds can: 'yes' trains those
  together (and says which train on their own) rather than refusing."""
  from configs.studies import s3_faces  # pylint: disable=g-import-not-at-top
  from flax_cae.studies import plan as study  # pylint: disable=g-import-not-at-top
  config = s3_faces.get_config()
  config.study.update(train_together='yes', num_seeds=2)
  _, _, members = study.plan(config)
  assert [len(configs) for _, configs in members] == [2, 2, 2, 2]


TOOLS = [
    ('flax_cae.visualize', ['--max_points=0'], ['--max_points must be an integer >= 5']),
    ('flax_cae.visualize', ['--max_points=-5'], ['--max_points must be an integer >= 5']),
    ('flax_cae.visualize', ['--max_points=abc'],
     ['--max_points=abc is not an integer; give a whole number, e.g. --max_points=2000.']),
    ('flax_cae.visualize', ['--workdir=/nonexistent'], ['holds no finished run']),
    ('flax_cae.evaluate', ['--workdir=/nonexistent'], ['--classifier is required']),
    ('flax_cae.evaluate', ['--classifier=/nonexistent'], ['--workdir is required']),
    ('flax_cae.evaluate', ['--workdir=/nonexistent', '--classifier=/nonexistent'],
     ['--workdir=/nonexistent holds no finished run']),
]


@pytest.mark.parametrize('module,flags,expected', TOOLS,
                         ids=[f'{m} {" ".join(f)}' for m, f, _ in TOOLS])
def test_tool_inputs(module, flags, expected):
  assert_one_sentence(run(flags, module=module), *expected)


def test_visualize_without_workdir_is_one_sentence():
  assert_one_sentence(run([], module='flax_cae.visualize'), '--workdir is required')


def test_tools_name_the_flag_that_holds_the_wrong_kind_of_run(finished):
  assert_one_sentence(run([f'--workdir={finished}', f'--classifier={finished}'],
                          module='flax_cae.evaluate'),
                      f'--classifier={finished} holds a reconstruction model (improved_cae), '
                      'not a classifier')
