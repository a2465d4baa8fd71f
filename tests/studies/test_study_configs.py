"""Every study config in configs/studies plans: its members' configs are valid and their
models build (study.plan checks this before anything is read or trained), so a config that
only a lent GPU will run (best_capacity) cannot arrive there broken."""

import importlib
import pathlib

import pytest

from flax_cae.studies import plan as study

STUDIES = sorted(p.stem for p in (pathlib.Path(__file__).parents[2] / 'configs' / 'studies')
                 .glob('*.py') if p.stem not in ('__init__', 'common'))


@pytest.mark.parametrize('name', STUDIES)
def test_study_config_plans(name):
  config = importlib.import_module(f'configs.studies.{name}').get_config()
  _, settings, members = study.plan(config)
  assert [m for m, _ in members] == settings.only.split(',')  # every member, table order


def test_evaluators_are_checked_on_the_planned_base():
  """The classifier evaluator's config is checked after eval_batch_size=0 became batch_size
  and study.data was applied, as every member's is."""
  config = importlib.import_module('configs.studies.s2_compression_rate').get_config()
  config.eval_batch_size = 0
  config.study.data = 'mnist'
  base, settings, _ = study.plan(config)
  assert base.eval_batch_size == base.batch_size and base.data.name == 'mnist'
  assert list(settings.evals) == ['classifier', 'pca']


def test_best_capacity_members_train_on_the_recipe_schedule():
  config = importlib.import_module('configs.studies.best_capacity').get_config()
  _, _, members = study.plan(config)
  members = dict(members)
  recipe = members['best256'][0]
  for name, (c,) in members.items():
    assert c.optimizer == recipe.optimizer and c.num_epochs == recipe.num_epochs == 60, name
    assert c.model.latent_dim == (64 if name.startswith('best64') else 256), name
  assert recipe.model.stage_blocks == (0, 0, 1)  # the recipe: one residual block at 8x8
  assert members['best256_no_blocks'][0].model.stage_blocks == (0, 0, 0)
  assert members['best256_deep'][0].model.stage_blocks == (0, 1, 2)
  # The 64-float recipe is cifar10_best64 itself, and each lever changes one thing of it.
  best64 = members['best64'][0]
  same = importlib.import_module('configs.cifar10_best64').get_config()
  assert (best64.model, best64.augment) == (same.model, 'flip_crop') and same.num_epochs == 40
  assert best64.model.code == 'dense' and best64.model.widths == (48, 96, 192)
  assert best64.loss.name == same.loss.name == 'neg_psnr'
  assert members['best64_no_flip'][0].augment == 'none'
  assert members['best64_flip'][0].augment == 'flip'
  assert members['best64_narrow'][0].model.widths == (32, 64, 128)
  assert members['best64_narrow'][0].model.code == 'dense'
  assert members['best64_mse'][0].loss.name == 'mse'
  assert members['best64_mse'][0].model == best64.model
  assert members['best64_deep'][0].model.code == 'dense'
  assert members['best64_deep'][0].model.stage_blocks == (0, 1, 2)
  spatial = members['best64_spatial'][0]
  assert spatial.model.code == 'spatial' and spatial.model.stage_blocks == (0, 0, 1, 0)
  assert spatial.augment == 'none'
  code8 = members['best64_code8x8'][0].model
  assert code8.widths == (32, 64, 128) and code8.code == 'spatial'  # an 8x8x1 code


def test_best_levers_res_blocks_member_is_not_the_recipe():
  """The recipe sets stage_blocks, which wins over model.blocks: the levers must set
  stage_blocks to differ from it."""
  config = importlib.import_module('configs.studies.best_levers').get_config()
  _, _, members = study.plan(config)
  blocks = {name: c.model.stage_blocks for name, (c,) in members}
  assert blocks['best256'] == (0, 0, 1)
  assert blocks['no_blocks'] == (0, 0, 0) and blocks['res_blocks'] == (1, 1, 1)
