"""A trained model's entropy model: tables at each quantizer step, saved whole and read back
equal, and each image's stream decoding to the symbols it was given."""

import numpy as np
import pytest

from flax_cae.codec import entropy
from flax_cae.runtime.errors import ConfigError


def _codes(n=300, shape=(4, 4, 3)):
  rng = np.random.default_rng(0)
  return (rng.normal(size=(n, *shape)) * np.array([1.0, 0.1, 3.0])).astype(np.float32)


def test_finer_steps_cost_more_bits_and_err_less():
  codes = _codes()
  model = entropy.fit(codes)
  assert model.steps == entropy.STEPS and model.default_step == entropy.DEFAULT_STEP
  bits, errors = [], []
  for step in model.steps:
    streams, decoded = entropy.code_images(model.table(step), codes[:50])
    bits.append(np.mean([len(s) for s in streams]))
    errors.append(np.abs(decoded - codes[:50]).max(axis=(0, 1, 2)))
    # Each channel's error is at most half its step (its std times the step).
    assert np.all(errors[-1] <= 0.5 * step * codes.reshape(-1, 3).std(0) * 1.001)
  assert bits[0] < bits[1] < bits[2]


def test_save_and_load_give_the_same_tables(tmp_path):
  model = entropy.fit(_codes())
  path = str(tmp_path / entropy.ENTROPY_FILE)
  model.save(path)
  back = entropy.EntropyModel.load(path)
  assert back.steps == model.steps and back.learned is False
  for a, b in zip(model.arrays(), back.arrays()):
    np.testing.assert_array_equal(a, b)
  assert not list(tmp_path.glob('*.tmp'))


def test_an_unknown_step_and_an_unreadable_file_are_one_sentence(tmp_path):
  model = entropy.fit(_codes())
  with pytest.raises(ValueError, match=r'quantizer step 0.3 is not one of this model\'s '
                     r'\(0.5, 0.25, 0.125\)'):
    model.table(0.3)
  bad = tmp_path / 'bad.npz'
  bad.write_bytes(b'not a zip')
  with pytest.raises(ConfigError, match='is not a readable entropy model'):
    entropy.EntropyModel.load(str(bad))


def test_a_learned_density_is_one_table_at_step_one():
  codes = _codes() * 4
  calls = []

  def density(low, size):
    calls.append((low, size))
    k = np.arange(size)
    return np.stack([np.exp(-np.abs(k + lo) / 3.0) for lo in low])

  model = entropy.from_density(codes, density)
  assert model.learned and model.steps == (1.0,) and model.default_step == 1.0
  low, size = calls[0]
  assert np.all(low <= np.round(codes).reshape(-1, 3).min(0))
  streams, decoded = entropy.code_images(model.table(), codes[:5])
  np.testing.assert_array_equal(decoded, np.round(codes[:5]))


@pytest.mark.parametrize('task,bottleneck,expected', [
    ('reconstruction', {'parts': {'latent': 256}, 'compression_ratio': 12.0}, True),
    ('rate_distortion', {'parts': {'latent': 512}, 'compression_ratio': 6.0}, True),
    ('reconstruction', {'parts': {'latent': 256, 'skip_1': 4096}, 'compression_ratio': 0.7},
     False),
    ('reconstruction', {'parts': {'latent': 4096}, 'compression_ratio': 0.75}, False),
    ('classification', None, False),
])
def test_which_models_compress(task, bottleneck, expected):
  assert entropy.compresses(task, bottleneck) is expected
