"""S2's classifier: LeNet-5 on CIFAR-10 (S2: about 65% test accuracy after 5 epochs).

S2 gives no optimizer settings for it; we use Adam 1e-3, batch 64, 5 epochs, and keep the
checkpoint with the best validation accuracy (5,000 images carved from train).

  python launch.py --config=configs/cifar10_lenet5.py --workdir=DIR
"""

from configs import default


def lenet5_config(data: str):
  c = default.get_config()
  c.data.name = data
  c.data.validation_size = 5000
  c.data.test_size = 0
  c.model.name = 'lenet5'
  c.loss.name = 'cross_entropy'  # a classifier's only loss
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-3
  c.batch_size = 64
  c.eval_batch_size = 1000
  c.num_epochs = 5
  c.eval_every_epochs = 1
  c.checkpoint_every_epochs = 1
  c.early_stopping.metric = 'accuracy'
  return c


def get_config():
  return lenet5_config('cifar10')
