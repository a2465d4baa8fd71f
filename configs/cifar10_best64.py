"""Issue 14: cifar10_best256's recipe at 64 floats (a 4x4x4 code: one more stage, 128 channels,
no block at 4x4), meant to beat PCA-64 on unseen images.

  python launch.py --config=configs/cifar10_best64.py --workdir=DIR
"""

from configs import cifar10_best256

# What differs from cifar10_best256; the studies' best64 members use it too.
MODEL = {'latent_dim': 64, 'widths': (32, 64, 128, 128), 'stage_blocks': (0, 0, 1, 0)}


def get_config():
  return cifar10_best256.get_config(**MODEL)
