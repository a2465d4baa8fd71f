"""What every study config shares: the `study` section with its defaults."""

import copy

import ml_collections

from flax_cae.studies import evals as evals_lib


def study_config(base: ml_collections.ConfigDict, name: str, members: dict, evals: dict,
                 **settings) -> ml_collections.ConfigDict:
  """`base` (what every member shares) plus a `study` section; `members` maps a member's
  name to the config fields it overrides, as a partial config tree; `evals` names what runs
  after the members ({evaluator: its settings}, flax_cae/studies/evals.py), each written out
  with every setting it takes so a flag can change any of them."""
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
      x_axis='',                # a config field the members vary (model.rate): curves against it
      # What runs after the members, in this order: pca (PCA at each member's floats),
      # nl_means (beside denoising members), classifier (S2: train={overrides of the base
      # config} trains one on the originals, or workdir=DIR reuses a finished one),
      # rate_distortion (steps, qualities: bytes, not floats), visualize (max_points: S4).
      evals=evals_lib.defaults(**evals),
  ))
  c.study.update(settings)
  return c
