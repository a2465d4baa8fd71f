"""S1 ("Exploring Enhanced Architectures for Convolutional Autoencoders") settings:
batch 256, Adam lr 1e-3, latent 256, MSE. S1 gives no epoch count; we use 30.
"""

from configs import default

S1_DATA = {
    # name: validation images carved from train (CINIC-10 has its own valid split)
    'mnist': 5000,
    'cifar10': 5000,
    'cinic10': 0,
}

S1_MODELS = {
    'base': dict(name='base_cae', activation='relu', skips=()),
    'improved': dict(name='improved_cae', activation='leaky_relu', skips=()),
    'improved_skip': dict(name='improved_cae', activation='leaky_relu', skips=(1, 2, 3, 4)),
}


def get_s1_config(data: str, model: str):
  c = default.get_config()
  c.data.name = data
  c.data.validation_size = S1_DATA[data]
  c.data.test_size = 0
  c.model.update(S1_MODELS[model])
  c.model.latent_dim = 256
  c.loss.name = 'mse'
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-3
  c.batch_size = 256
  c.eval_batch_size = 1000
  c.num_epochs = 30
  c.eval_every_epochs = 5
  c.checkpoint_every_epochs = 5
  c.num_sample_images = 10
  return c
