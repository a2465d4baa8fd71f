"""What every study config shares: the `study` section with its defaults."""

import copy

import ml_collections


def study_config(base: ml_collections.ConfigDict, name: str, members: dict,
                 **settings) -> ml_collections.ConfigDict:
  """`base` (what every member shares) plus a `study` section; `members` maps a member's
  name to the config fields it overrides, as a partial config tree."""
  c = base
  # One copy per member: ConfigDict keeps a dict shared by two members (e.g. the same noise
  # settings) as one shared node, and a flag setting one member's field would set both.
  members = {k: copy.deepcopy(v) for k, v in members.items()}
  c.study = ml_collections.ConfigDict(dict(
      name=name,
      members=members,
      # The members to run, in the table's order (ConfigDicts sort their keys): a subset
      # is e.g. --config.study.only=adam,sgd_momentum.
      only=','.join(members),
      data='',                  # '' = the data fields above; mnist | cifar10 | cinic10 = S1's
      num_seeds=1,              # each member trained with seeds seed, seed+1, ...: mean ± std
      train_together='auto',    # auto | yes | no: vmap members that differ only in numbers
      tune_learning_rate=False,  # pick each member's rate from rate x lr_factors, short runs
      lr_factors=(0.3, 1.0, 3.0),
      tune_epochs=1,            # length of each tuning run, in epochs
      num_grid_images=8,        # test images in reconstructions.png
      # S2: a classifier judges every member's reconstructions. `classifier` overrides the
      # base config to train one on the original images (e.g. {'model': {'name': 'lenet5'}, 'loss': {'name': 'cross_entropy'}});
      # `classifier_workdir` reuses a finished one instead.
      classifier={},
      classifier_workdir='',
      x_axis='',                # a config field the members vary (model.rate): curves against it
      visualize=False,          # S4: flax_cae.visualize for every member at the end
      # Issue 18: bytes, not floats. Every code quantized (step = rd_steps x each channel's
      # std on the training codes), range-coded and decoded from its bytes; PCA, JPEG and
      # WebP (rd_qualities) beside them: rate_distortion.{md,csv,png}.
      rate_distortion=False,
      rd_steps=(1.0, 0.5, 0.25, 0.125),
      rd_qualities=(5, 10, 20, 30, 50, 70, 90),
  ))
  c.study.update(settings)
  return c
