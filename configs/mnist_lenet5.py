"""LeNet-5 on MNIST (28x28 digits zero-padded to 32x32, as LeCun did): Adam 1e-3, batch
64, 5 epochs, the checkpoint with the best validation accuracy kept.

  python launch.py --config=configs/mnist_lenet5.py --workdir=DIR
"""

from configs.cifar10_lenet5 import lenet5_config


def get_config():
  return lenet5_config('mnist')
