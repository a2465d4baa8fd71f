"""S0 ("Convolutional autoencoder for CIFAR-10"): three conv + max-pool stages, a dense
bottleneck of 256, three transposed convs; MSE, Adam lr 1e-3, batch 64, 100 epochs,
early stopping on validation loss keeping the best model."""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = 'cifar10'
  c.data.validation_size = 5000
  c.data.test_size = 0
  c.model.update(name='cae', widths=(32, 64, 128), latent_dim=256, activation='relu')
  c.loss.name = 'mse'
  c.optimizer.update(name='adam', learning_rate=1e-3)
  c.batch_size = 64
  c.eval_batch_size = 1000
  c.num_epochs = 100
  c.eval_every_epochs = 1
  c.checkpoint_every_epochs = 5
  c.early_stopping.update(metric='loss', patience=10)
  c.num_sample_images = 10
  return c
