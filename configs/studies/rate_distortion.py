"""Compression in bytes. The codes that beat PCA (cifar10_best256's 256 floats and its
64-float sibling) quantized and range-coded at several steps, Balle et al. 2017's learned
codec at several lambdas (trained by the same loop: loss = bits per pixel + lambda x 255^2 x
MSE), PCA at the same floats coded the same way, and JPEG and WebP, every image coded
alone and decoded from its bytes: rate_distortion.{md,csv,png} beside study.md.

  python launch.py --config=configs/studies/rate_distortion.py --workdir=DIR

On the CIFAR-10 JPEGs of ../shared/data, as configs/studies/best_codes.py says; on LFW faces
--config.data.name=lfw; on any folder --config.data.name=image_folder
--config.data.source_dir=DIR. The Balle members keep the checkpoint with the best
validation loss (rate + lambda x distortion), the autoencoders the best validation PSNR.
"""

from configs import cifar10_best256
from configs import cifar10_best64
from configs.studies.common import study_config

LAMBDAS = (0.0025, 0.01, 0.04, 0.16)


def balle(lam):
  # num_epochs is the recipe's, given here so that a short run can shorten only the Balle
  # members (--config.study.members.balle2017_lambda0p01.num_epochs=6) and reuse a finished
  # cifar10_best256 workdir as the best256 member (docs/studies/compression-in-bytes.md).
  return {'model': {'name': 'balle2017', 'widths': (96, 96, 96)}, 'num_epochs': 60,
          'loss': {'name': 'mse', 'rd_lambda': lam},
          'optimizer': {'name': 'adam', 'learning_rate': 1e-3, 'weight_decay': 0.0},
          'selection_metric': 'loss'}


def get_config():
  members = {
      'best256': {},
      'best64': cifar10_best64.OVERRIDES,
      **{f'balle2017_lambda{lam:g}'.replace('.', 'p'): balle(lam) for lam in LAMBDAS},
  }
  return study_config(cifar10_best256.get_config(), 'rate_distortion', members,
                      evals=dict(pca={}, rate_distortion={}))
