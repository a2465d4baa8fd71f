"""The best256 recipe's levers, one at a time: cifar10_best256 against itself with one change each,
trained one by one (so images/s is each member's own). The table says what each change
bought in PSNR and what it cost in training images/s; compare members on validation PSNR
(the study's validation_psnr.png and each member's metrics.jsonl), not on the test split.

  python launch.py --config=configs/studies/best_levers.py --workdir=DIR

Data as configs/studies/best_codes.py.
"""

from configs import cifar10_best256
from configs.studies.common import study_config


def get_config():
  return study_config(cifar10_best256.get_config(), 'best_levers', {
      'best256': {},
      'no_blocks': {'model': {'stage_blocks': (0, 0, 0)}},
      'res_blocks': {'model': {'stage_blocks': (1, 1, 1)}},
      'wider': {'model': {'widths': (48, 96, 192)}},
      'half_width': {'model': {'widths': (16, 32, 64)}},
      'silu': {'model': {'activation': 'silu'}},
      'relu': {'model': {'activation': 'relu'}},
      'batch_norm': {'model': {'batch_norm': True}},
      'group_norm': {'model': {'batch_norm': True, 'norm': 'group'}},
      'no_weight_decay': {'optimizer': {'weight_decay': 0.0}},
      'weight_decay_1e-2': {'optimizer': {'weight_decay': 1e-2}},
      'constant_lr': {'optimizer': {'schedule': {'name': 'constant', 'warmup_epochs': 0.0}}},
      'l1': {'loss': {'name': 'l1'}},
      'mse_ssim': {'loss': {'name': 'mse+ssim'}},
      'neg_psnr': {'loss': {'name': 'neg_psnr'}},
      'ema': {'ema_decay': 0.999},
      'flip': {'augment': 'flip'},
      'flip_crop': {'augment': 'flip_crop'},
      'bfloat16': {'model': {'dtype': 'bfloat16'}},
  }, evals=dict(pca={}), train_together='no')
