"""Studies through launch.py, continued: an interrupted study resumes without retraining
finished members and refuses other settings; bad study values and config files are one
sentence (split from test_studies.py so the suite's two workers share the load)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from test_studies import ROOT, assert_study, cifar, launch, tiny  # pylint: disable=unused-import


@pytest.mark.slow
def test_interrupted_study_resumes_without_retraining(tmp_path, cifar):
  workdir = str(tmp_path / 'resume')
  flags = tiny(cifar, workdir, 's1_losses', **{'study.only': 'mse,l1', 'num_epochs': 8})
  log_path = str(tmp_path / 'first.log')
  with open(log_path, 'w') as log:
    proc = subprocess.Popen([sys.executable, 'launch.py', *flags], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  second = os.path.join(workdir, 'members', 'l1', 'checkpoints')
  try:  # killed once the second member has saved a checkpoint of its own
    deadline = time.time() + 600
    while not (os.path.isdir(second) and any(d.isdigit() for d in os.listdir(second))):
      assert proc.poll() is None, open(log_path).read()[-3000:]
      assert time.time() < deadline
      time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
  finally:
    proc.kill()
  first_results = os.path.join(workdir, 'members', 'mse', 'results.json')
  before = (open(first_results).read(), os.stat(first_results).st_mtime_ns)
  assert not os.path.exists(os.path.join(workdir, 'members', 'l1', 'results.json'))

  rc, log = launch(flags)
  assert rc == 0, log[-4000:]
  assert (open(first_results).read(), os.stat(first_results).st_mtime_ns) == before
  assert 'Study: training mse' not in log  # finished: not retrained
  assert 'Resumed from the checkpoint at step' in log  # l1 went on from its checkpoint
  assert_study(workdir, ['mse', 'l1'])

  # The same workdir under other settings is refused, naming the key; nothing is retrained.
  rc, log = launch(flags + ['--config.num_epochs=21'])
  lines = [l for l in log.splitlines() if l.startswith('flax-cae: error:')]
  assert rc == 2 and len(lines) == 1 and "'num_epochs': (8, 21)" in lines[0], log[-2000:]
  assert (open(first_results).read(), os.stat(first_results).st_mtime_ns) == before


BAD_STUDY_FLAGS = [
    ({'study.num_seeds': 0}, 'study.num_seeds must be a positive integer'),
    ({'study.tune_epochs': -1}, 'study.tune_epochs must be a positive integer'),
    ({'study.train_together': 'maybe'}, 'valid study.train_together names are: auto, no, yes'),
    ({'study.only': 'adam,adamm'}, "Unknown study member 'adamm'"),
    ({'study.lr_factors': '(0.0, 1.0)'}, 'study.lr_factors must be positive numbers'),
    ({'study.data': 'imagenet'}, 'valid study.data names are: cifar10, cinic10, mnist'),
    ({'study.tune_epochs': 5}, 'study.tune_epochs (5) is longer than training'),
    ({'study.members.adam.optimizer.learning_rate': -1.0}, 'learning_rate must be > 0'),
    ({'model.widths': '(8, 8)'}, 'model.widths for improved_cae needs 4 entries'),
    ({'study.num_grid_images': 0}, 'study.num_grid_images must be a positive integer'),
    ({'study.x_axis': 'model.ratio'}, "study.x_axis='model.ratio' is not a config field"),
]


@pytest.mark.parametrize('overrides,expected', BAD_STUDY_FLAGS,
                         ids=[next(iter(o)) + '=' + str(next(iter(o.values()))) for o, _ in BAD_STUDY_FLAGS])
def test_bad_study_values_are_one_sentence(tmp_path, cifar, overrides, expected):
  rc, log = launch(tiny(cifar, str(tmp_path / 'w'), 's1_optimizers', **overrides))
  lines = [l for l in log.splitlines() if l.startswith('flax-cae: error:')]
  assert rc == 2 and len(lines) == 1 and expected in lines[0], log[-2000:]


# Each evaluator's settings (study.evals), through the study config that names it.
BAD_EVAL_FLAGS = [
    ('rate_distortion', {'study.evals.rate_distortion.steps': '(0.5, -1.0)'},
     'study.evals.rate_distortion.steps must be positive numbers (quantizer steps in standard '
     'deviations'),
    ('rate_distortion', {'study.evals.rate_distortion.qualities': '(10, 500)'},
     'study.evals.rate_distortion.qualities must be JPEG/WebP qualities, integers in 1..100'),
    ('s4_colored_mnist', {'study.evals.visualize.max_points': 2},
     '--config.study.evals.visualize.max_points must be an integer >= 5'),
    ('s2_compression_rate', {'study.evals.classifier.workdir': '/no/such/classifier',
                             'study.only': 'rate_2', 'model.widths': '()', 'study.x_axis': ''},
     '--config.study.evals.classifier.workdir=/no/such/classifier holds no finished run'),
    ('s2_compression_rate', {'study.evals.classifier.train.model.name': 'rate_cae',
                             'study.only': 'rate_2'},
     'study.evals.classifier.train trains a rate_cae, which is not a classifier'),
    ('s1_optimizers', {'study.evals.pca.floats': 3},
     "--config.study.evals.pca.floats: 'floats' is not a field of the config"),
]


@pytest.mark.parametrize('study,overrides,expected', BAD_EVAL_FLAGS,
                         ids=[f'{s}:{next(iter(o))}' for s, o, _ in BAD_EVAL_FLAGS])
def test_bad_evaluator_settings_are_one_sentence(tmp_path, cifar, study, overrides, expected):
  rc, log = launch(tiny(cifar, str(tmp_path / 'w'), study, **overrides))
  lines = [l for l in log.splitlines() if l.startswith('flax-cae: error:')]
  assert rc == 2 and len(lines) == 1 and expected in lines[0], log[-2000:]
  assert not (tmp_path / 'w').exists()


EVALS_IN_A_CONFIG = '''
from configs.studies import s1_optimizers

def get_config():
  c = s1_optimizers.get_config()
  c.study.evals.{name} = {settings}
  return c
'''


@pytest.mark.parametrize('name,settings,expected', [
    ('nl_mean', '{}', "Unknown study evaluator (study.evals) 'nl_mean'; valid study evaluator (study.evals) names are: classifier, nl_means, pca, rate_distortion, visualize."),
    ('rate_distortion', "{'step': (1.0,)}",
     "study.evals.rate_distortion has no setting 'step'; its settings are qualities, steps."),
    ('classifier', '{}', 'study.evals.classifier needs the overrides that train a classifier'),
    ('visualize', 'True', 'study.evals.visualize must be its settings, a dict (e.g. visualize={})'),
])
def test_evaluators_a_config_names_are_checked(tmp_path, cifar, name, settings, expected):
  config = tmp_path / 'study_config.py'
  config.write_text(EVALS_IN_A_CONFIG.format(name=name, settings=settings))
  flags = tiny(cifar, str(tmp_path / 'w'), 's1_optimizers')
  rc, log = launch([f'--config={config}', *flags[1:]])
  lines = [l for l in log.splitlines() if l.startswith('flax-cae: error:')]
  assert rc == 2 and len(lines) == 1 and expected in lines[0], log[-2000:]
  assert not (tmp_path / 'w').exists()


def test_a_moved_study_field_names_its_new_place(tmp_path, cifar):
  config = tmp_path / 'old_study.py'
  config.write_text('from configs.studies import s1_optimizers\n\ndef get_config():\n'
                    '  c = s1_optimizers.get_config()\n  c.study.visualize = True\n  return c\n')
  flags = tiny(cifar, str(tmp_path / 'w'), 's1_optimizers')
  rc, log = launch([f'--config={config}', *flags[1:]])
  lines = [l for l in log.splitlines() if l.startswith('flax-cae: error:')]
  assert rc == 2 and len(lines) == 1 and 'study.visualize is now study.evals.visualize' in lines[0]
  assert not os.path.exists(tmp_path / 'w' / 'members')  # refused before any training


def test_missing_config_file_is_one_sentence(tmp_path):
  """Seen with ml_collections 1.1: the failure surfaced later, as a traceback."""
  rc, log = launch(['--config=missing.py', f'--workdir={tmp_path / "w"}'])
  assert rc == 2 and 'Traceback' not in log, log[-2000:]
  assert log.strip().splitlines()[-1].startswith('flax-cae: error: the config could not be loaded')
  assert 'missing.py' in log


