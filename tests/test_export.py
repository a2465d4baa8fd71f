"""`python -m flax_cae.export`: a workdir becomes a folder that `flax_cae.load` reads without
it, giving the same outputs and the same streams; an unfinished run is exported from its
best checkpoint so far and says so; bad arguments are one sentence with nothing written."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import flax_cae
from launching import run_module, tiny_run


def export(*args) -> subprocess.CompletedProcess:
  return run_module('flax_cae.export', *args)


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  return tiny_run(tmp_path_factory.mktemp('export'))


@pytest.fixture(scope='module')
def faces(workdir):
  with np.load(os.path.join(workdir, 'test_samples.npz')) as z:
    return z['images']


def test_an_export_is_the_workdirs_model_without_the_workdir(workdir, faces, tmp_path):
  out = tmp_path / 'model'
  r = export(f'--workdir={workdir}', f'--out={out}', '--images=3', '--note=how it was made')
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'Exported step ' in r.stdout and '(float32 weights).' in r.stdout
  assert sorted(os.listdir(out)) == ['entropy_model.npz', 'model.json', 'test_images.npz',
                                     'variables.npz']
  moved = tmp_path / 'elsewhere'
  shutil.move(str(out), moved)  # nothing refers back to the workdir or to its old place
  original, copy = flax_cae.load(workdir), flax_cae.load(str(moved))
  np.testing.assert_array_equal(copy.reconstruct(faces), original.reconstruct(faces))
  assert copy.fingerprint == original.fingerprint
  assert copy.compress(faces) == original.compress(faces)
  assert copy.results['test_psnr'] == original.results['test_psnr']
  info = json.loads((moved / 'model.json').read_text())
  assert info['note'] == 'how it was made' and info['source']['finished']
  assert info['source']['step'] == original.results['best_step']
  with np.load(moved / 'test_images.npz') as z:
    np.testing.assert_array_equal(z['images'], faces[:3])
  with np.load(moved / 'variables.npz') as z:  # parameters only: no optimizer state
    assert all(k.startswith(('params/', 'batch_stats/')) for k in z.files)


def test_float16_weights_are_measured_against_float32(workdir, faces, tmp_path):
  r = export(f'--workdir={workdir}', f'--out={tmp_path / "half"}', '--dtype=float16')
  assert r.returncode == 0, r.stderr[-3000:]
  info = json.loads((tmp_path / 'half' / 'model.json').read_text())
  scores = info['split']['scores_by_dtype']
  assert info['dtype'] == 'float16' and set(scores) == {'float32', 'float16'}
  assert abs(scores['float16']['psnr'] - scores['float32']['psnr']) < 0.1
  with np.load(tmp_path / 'half' / 'variables.npz') as z:
    assert {z[k].dtype for k in z.files} == {np.dtype('float16')}
  half = flax_cae.load(str(tmp_path / 'half'))
  np.testing.assert_allclose(half.reconstruct(faces), flax_cae.load(workdir).reconstruct(faces),
                             atol=0.02)
  assert half.fingerprint != flax_cae.load(workdir).fingerprint  # other weights, other streams


def test_a_run_stopped_before_its_end_is_exported_from_its_best_checkpoint(workdir, tmp_path):
  stopped = tmp_path / 'stopped'
  shutil.copytree(workdir, stopped)
  os.remove(stopped / 'results.json')  # as a run stopped by SIGTERM leaves it
  r = export(f'--workdir={stopped}', f'--out={tmp_path / "m"}', '--images=0')
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'the run is stopped before its end, so this is its best checkpoint so far' in r.stdout
  info = json.loads((tmp_path / 'm' / 'model.json').read_text())
  assert not info['source']['finished'] and info['test_images']['count'] == 0
  assert flax_cae.load(str(tmp_path / 'm')).reconstruct(np.zeros((25, 25, 1), np.uint8)).shape \
      == (25, 25, 1)


@pytest.mark.parametrize('args,message', [
    (['--out=OUT'], '--workdir is required'),
    (['--workdir=RUN'], '--out is required'),
    (['--workdir=RUN', '--out=OUT', '--dtype=int8'], '--dtype=int8 is not one of float32, '
     'float16, auto'),
    (['--workdir=RUN', '--out=OUT', '--images=-1'], '--images=-1 must be 0'),
    (['--workdir=RUN', '--out=FULL'], 'already exists and is not an empty folder'),
    (['--workdir=NOWHERE', '--out=OUT'], 'holds no finished run'),
    (['--workdir=RUN', '--out=NOPARENT'], 'its parent folder'),
])
def test_bad_arguments_are_one_sentence_and_nothing_is_written(workdir, tmp_path, args, message):
  (tmp_path / 'full').mkdir()
  (tmp_path / 'full' / 'keep.txt').write_text('mine')
  paths = {'RUN': workdir, 'OUT': str(tmp_path / 'out'), 'FULL': str(tmp_path / 'full'),
           'NOWHERE': str(tmp_path / 'nowhere'), 'NOPARENT': str(tmp_path / 'no' / 'out')}
  r = export(*[a.split('=')[0] + '=' + paths.get(a.split('=')[1], a.split('=')[1]) for a in args])
  assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
  line = r.stderr.strip().splitlines()[-1]
  assert line.startswith('flax-cae: error: ') and message in line, line
  assert not (tmp_path / 'out').exists() and not (tmp_path / 'no').exists()
  assert os.listdir(tmp_path / 'full') == ['keep.txt']
  assert not [p for p in os.listdir(tmp_path) if p.startswith('.export-')]


def test_a_run_without_an_entropy_model_gets_one_fitted_at_export(workdir, faces, tmp_path):
  """As a run stopped before its end, or finished by an older flax-cae, has none."""
  bare = tmp_path / 'bare'
  shutil.copytree(workdir, bare)
  os.remove(bare / 'entropy_model.npz')
  r = export(f'--workdir={bare}', f'--out={tmp_path / "m"}', '--images=0')
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'The run had no entropy model: fitted at export, on the codes of the first' in r.stdout
  assert not (bare / 'entropy_model.npz').exists()  # the workdir is only read
  info = json.loads((tmp_path / 'm' / 'model.json').read_text())
  assert info['entropy_model']['fitted'].startswith('at export')
  model, original = flax_cae.load(str(tmp_path / 'm')), flax_cae.load(workdir)
  # The fit of the run's own end, on the same images (codes equal to rounding: other batches).
  for step in original.entropy_model.steps:
    a, b = model.entropy_model.table(step), original.entropy_model.table(step)
    np.testing.assert_allclose(a.step, b.step, rtol=1e-5)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-3)
  streams = model.compress(faces)
  assert [s[20:] for s in streams] == [s[20:] for s in original.compress(faces)] or (
      np.abs(model.decompress(streams) - original.decompress(original.compress(faces))).max()
      < 0.05)
  assert (os.stat(tmp_path / 'm').st_mode & 0o777) == 0o777 & ~_umask()


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def test_a_damaged_export_is_one_sentence(workdir, tmp_path):
  assert export(f'--workdir={workdir}', f'--out={tmp_path / "m"}', '--images=0').returncode == 0
  weights = tmp_path / 'm' / 'variables.npz'
  weights.write_bytes(weights.read_bytes()[:4000])
  with pytest.raises(ValueError, match='is not a readable exported model .* export it again'):
    flax_cae.load(str(tmp_path / 'm'))
