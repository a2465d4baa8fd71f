"""Issue 14, the next step: capacity for the 256- and 64-float codes, over the recipe's full
60 epochs. The 60-epoch runs on the CPU ended flat (the last 15 epochs bought 0.04 dB) below
the issue's target, and a wider model over 20 epochs did no better: what is left is depth
where it is cheap, residual blocks at the low-resolution stages (`model.stage_blocks`), and
depth with width. Sized for a lent GPU (`bash benchmarks/device_run.sh capacity`, one call);
on the 2-core CPU, stage_blocks (0, 0, 1) and (0, 1, 2) train at 0.53x and 0.29x the
recipe's images/s (README).
PCA at each code size sits beside the members; choose on validation PSNR, not on the test
split.

  python launch.py --config=configs/studies/best_capacity.py --workdir=DIR

Data as configs/studies/best_codes.py.
"""

from configs import cifar10_best256
from configs.studies.common import study_config

BEST64 = {'latent_dim': 64, 'widths': (32, 64, 128, 128)}


def get_config():
  return study_config(cifar10_best256.get_config(), 'best_capacity', {
      'best256': {},
      # One block at 8x8: on the CPU +0.73 dB of validation PSNR over the recipe at epoch 20
      # of the same 60-epoch schedule (README).
      'best256_block8': {'model': {'stage_blocks': (0, 0, 1)}},
      'best256_deep': {'model': {'stage_blocks': (0, 1, 2)}},
      'best256_wide_deep': {'model': {'widths': (64, 128, 256), 'stage_blocks': (0, 1, 2)}},
      'best64': {'model': BEST64},
      'best64_block8': {'model': {**BEST64, 'stage_blocks': (0, 0, 1, 0)}},
      'best64_deep': {'model': {**BEST64, 'stage_blocks': (0, 1, 2, 2)}},
  }, train_together='no')
