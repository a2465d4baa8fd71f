"""S2 ("Convolutional autoencoder and learnings on image compression"): how much does the
compression rate r (how many times height and width shrink) cost? One rate CAE per r in
2, 4, 8, 16 (conv + ReLU + max-pool encoder, nearest-neighbour upsampling + conv decoder,
32 code channels: 32x4x4 at r = 8), judged by a LeNet-5 trained on the original images:
its accuracy on the reconstructions divided by its accuracy on the originals. CIFAR-10,
MSE, Adam 1e-3, batch 64, 5 epochs each (S2: 5 epochs for the CAE and for the CNN).

  python launch.py --config=configs/studies/s2_compression_rate.py --workdir=DIR

PCA with each rate's number of floats is scored the same way (r = 2 keeps 8,192 floats,
more than the image's 3,072: no PCA row, "not a compression"). A classifier trained
before: --config.study.evals.classifier.workdir=DIR.
"""

from configs import default
from configs.studies.common import study_config

RATES = (2, 4, 8, 16)


def get_config():
  c = default.get_config()
  c.data.name = 'cifar10'
  c.data.validation_size = 5000
  c.data.test_size = 0
  c.model.update(name='rate_cae', activation='relu', batch_norm=False)
  c.loss.name = 'mse'
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-3
  c.batch_size = 64
  c.eval_batch_size = 1000
  c.num_epochs = 5
  c.eval_every_epochs = 1
  c.checkpoint_every_epochs = 1
  c.num_sample_images = 10
  return study_config(
      c, 's2_compression_rate',
      {f'rate_{r}': {'model': {'rate': r}} for r in RATES},
      evals=dict(pca={}, classifier=dict(train={'model': {'name': 'lenet5'},
                                                'loss': {'name': 'cross_entropy'},
                                                'early_stopping': {'metric': 'accuracy'}})),
      x_axis='model.rate')
