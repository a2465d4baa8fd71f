"""Issue 14: capacity for the 256- and 64-float codes, over the recipe's full 60 epochs. The
recipe (one residual block at 8x8) against no blocks (the first recipe, which ended flat
below the issue's target on the CPU), more depth at the low-resolution stages
(`model.stage_blocks`), depth with width, and for 64 floats a code on the 8x8 grid and a
dense code (one vector). Sized
for a lent GPU (`bash benchmarks/device_run.sh capacity`, one call); on the 2-core CPU,
stage_blocks (0, 0, 1) and (0, 1, 2) train at 0.53x and 0.29x the images/s of no blocks
(README).
PCA at each code size sits beside the members; choose on validation PSNR, not on the test
split.

  python launch.py --config=configs/studies/best_capacity.py --workdir=DIR

Data as configs/studies/best_codes.py.
"""

from configs import cifar10_best256
from configs import cifar10_best64
from configs.studies.common import study_config

BEST64 = cifar10_best64.MODEL


def get_config():
  return study_config(cifar10_best256.get_config(), 'best_capacity', {
      'best256': {},
      'best256_no_blocks': {'model': {'stage_blocks': (0, 0, 0)}},
      'best256_deep': {'model': {'stage_blocks': (0, 1, 2)}},
      'best256_wide_deep': {'model': {'widths': (64, 128, 256), 'stage_blocks': (0, 1, 2)}},
      'best64': {'model': BEST64},
      'best64_no_blocks': {'model': {**BEST64, 'stage_blocks': (0, 0, 0, 0)}},
      'best64_deep': {'model': {**BEST64, 'stage_blocks': (0, 1, 2, 2)}},
      # 64 floats as an 8x8x1 code after the 256-float recipe's three stages, instead of a
      # fourth stage down to 4x4x4: finer grid, fewer channels.
      'best64_code8x8': {'model': {'latent_dim': 64}},
      # The recipe at 64 floats peaked at epoch 25 of 60 on validation and then fell (README):
      # random left-right flips against that over-fitting.
      'best64_flip': {'model': BEST64, 'augment': 'flip'},
      # 64 floats as one vector (model.code=dense) from the three stages' 8x8x128 map: each
      # float may draw on the whole image, as PCA's do; led a 3-epoch CPU screen (README).
      'best64_dense': {'model': {'latent_dim': 64, 'code': 'dense'}},
      'best64_dense_flip': {'model': {'latent_dim': 64, 'code': 'dense'}, 'augment': 'flip'},
  }, train_together='no')
