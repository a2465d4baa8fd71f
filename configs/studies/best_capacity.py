"""Capacity for the 256- and 64-float codes, over the recipe's full schedules. The
recipe (one residual block at 8x8) against no blocks, more depth at the low-resolution stages
(`model.stage_blocks`), depth with width; for 64 floats the recipe (a dense code, flips and
shifts, loss neg_psnr) with one change at a time and the earlier spatial codes. Sized
for a GPU (`bash benchmarks/device_run.sh capacity`, one call): each block costs images/s,
most at the high-resolution stages.
PCA at each code size sits beside the members; choose on validation PSNR, not on the test
split.

  python launch.py --config=configs/studies/best_capacity.py --workdir=DIR

Data as configs/studies/best_codes.py.
"""

from configs import cifar10_best256
from configs import cifar10_best64
from configs.studies.common import study_config

BEST64 = cifar10_best64.OVERRIDES
SPATIAL64 = cifar10_best64.SPATIAL


def get_config():
  return study_config(cifar10_best256.get_config(), 'best_capacity', {
      'best256': {},
      'best256_no_blocks': {'model': {'stage_blocks': (0, 0, 0)}},
      'best256_deep': {'model': {'stage_blocks': (0, 1, 2)}},
      'best256_wide_deep': {'model': {'widths': (64, 128, 256), 'stage_blocks': (0, 1, 2)}},
      # The 64-float recipe (widths 48/96/192, a dense code, flips and shifts, -PSNR; 60
      # epochs here) and one change at a time.
      'best64': BEST64,
      'best64_no_flip': {**BEST64, 'augment': 'none'},
      'best64_flip': {**BEST64, 'augment': 'flip'},
      'best64_narrow': {**BEST64, 'model': {**BEST64['model'], 'widths': (32, 64, 128)}},
      'best64_mse': {**BEST64, 'loss': {'name': 'mse'}},
      'best64_deep': {**BEST64, 'model': {**BEST64['model'], 'stage_blocks': (0, 1, 2)}},
      # The earlier 64-float codes, spatial: a fourth stage down to 4x4x4 (with and without
      # its block, with flips), and an 8x8x1 code after the three stages.
      'best64_spatial': {'model': SPATIAL64},  # these train on MSE, as they were measured
      'best64_spatial_no_blocks': {'model': {**SPATIAL64, 'stage_blocks': (0, 0, 0, 0)}},
      'best64_spatial_flip': {'model': SPATIAL64, 'augment': 'flip'},
      'best64_code8x8': {'model': {'latent_dim': 64}},
  }, evals=dict(pca={}), train_together='no')
