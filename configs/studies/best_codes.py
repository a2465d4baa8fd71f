"""Codes better than PCA. cifar10_best256 (a 256-float code) and its 64-float
sibling trained by one command, with PCA at the same floats on the same test images beside
each (the study's PCA rows).

  python launch.py --config=configs/studies/best_codes.py --workdir=DIR

On the CIFAR-10 training images as JPEG files (carved into train, validation and test), as
docs/studies/best-codes.md does:
  --config.data.name=image_folder --config.data.source_dir=CIFAR_JPEGS/train
  --config.data.image_size="(32, 32)" --config.data.channels=3
  --config.data.validation_size=5000 --config.data.test_size=5000
"""

from configs import cifar10_best256
from configs import cifar10_best64
from configs.studies.common import study_config


def get_config():
  return study_config(cifar10_best256.get_config(), 'best_codes', {
      'best256': {},
      'best64': cifar10_best64.OVERRIDES,
  }, evals=dict(pca={}))
