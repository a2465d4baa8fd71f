"""S1's loss comparison on ImprovedCAE (CIFAR-10, batch 256, Adam 1e-3, latent 256, 30
epochs): MSE, L1, BCE, alpha*L1 + beta*MSE at (0.1, 1) and (0.5, 1), plus S0's SSIM and
MSE+SSIM. Every member is scored by the same test PSNR/SSIM, whatever it minimised.

  python launch.py --config=configs/studies/s1_losses.py --workdir=DIR [--config.study.data=cinic10]
"""

from configs import s1
from configs.studies.common import study_config


def get_config():
  loss = lambda name, **kw: {'loss': dict(name=name, **kw)}
  return study_config(s1.get_s1_config('cifar10', 'improved'), 's1_losses', {
      'mse': loss('mse'),
      'l1': loss('l1'),
      'bce': loss('bce'),
      'l1+mse_1:10': loss('l1+mse', alpha=0.1, beta=1.0),
      'l1+mse_1:2': loss('l1+mse', alpha=0.5, beta=1.0),
      'ssim': loss('ssim'),
      'mse+ssim': loss('mse+ssim', ssim_weight=1.0),
  }, evals=dict(pca={}))
