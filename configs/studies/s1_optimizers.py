"""S1's optimizer comparison: seven optimizers on ImprovedCAE (CIFAR-10, batch 256, latent
256, MSE, 30 epochs), each with its learning rate picked from its customary rate x (0.3, 1,
3) by validation PSNR after one epoch. S1 names neither the seven nor the rates; Adam and
Adamax won there.

  python launch.py --config=configs/studies/s1_optimizers.py --workdir=DIR [--config.study.data=mnist]
"""

from configs import s1
from configs.studies.common import study_config


def get_config():
  opt = lambda name, lr, **kw: {'optimizer': dict(name=name, learning_rate=lr, **kw)}
  return study_config(s1.get_s1_config('cifar10', 'improved'), 's1_optimizers', {
      'adam': opt('adam', 1e-3),
      'adamax': opt('adamax', 2e-3),
      'sgd_momentum': opt('sgd', 1e-2, momentum=0.9),
      'rmsprop': opt('rmsprop', 1e-3),
      'adagrad': opt('adagrad', 1e-2),
      'adadelta': opt('adadelta', 1.0),
      'nadam': opt('nadam', 1e-3),
  }, evals=dict(pca={}), tune_learning_rate=True)
