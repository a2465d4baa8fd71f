"""Issue 14's levers, one at a time: cifar10_best256 against itself with one change each,
trained one by one (so images/s is each member's own). The table says what each change
bought in test PSNR and what it cost in training images/s.

  python launch.py --config=configs/studies/best_levers.py --workdir=DIR

Data as configs/studies/best_codes.py. Not here: an EMA of the parameters (flax-cae has
none yet) and bfloat16 (slower than float32 on a CPU; benchmarks/device_run.sh bfloat16).
"""

from configs import cifar10_best256
from configs.studies.common import study_config


def get_config():
  return study_config(cifar10_best256.get_config(), 'best_levers', {
      'best256': {},
      'no_res_blocks': {'model': {'blocks': 0}},
      'two_res_blocks': {'model': {'blocks': 2}},
      'half_width': {'model': {'widths': (16, 32, 64)}},
      'relu': {'model': {'activation': 'relu'}},
      'batch_norm': {'model': {'batch_norm': True}},
      'constant_lr': {'optimizer': {'schedule': {'name': 'constant', 'warmup_epochs': 0.0}}},
      'mse_ssim': {'loss': {'name': 'mse+ssim'}},
  }, train_together='no')
