"""S3 ("A better autoencoder for image: convolutional autoencoder"): a fully connected
autoencoder (SimpleAE: one hidden layer) against a CAE with the same code size, for
compression and for denoising, on faces; loss against training time for all four.

Data: scikit-image's bundled LFW subset by default (200 grayscale 25x25 crops, 100 of them
faces; no download; 160 train / 20 validation / 20 test); LFW itself at S3's 64x64 grayscale with
--config.data.name=lfw --config.data.image_size="(64, 64)" --config.data.channels=1 (TFDS's lfw
where prepared in data_dir, else lfw.tgz in --config.data.source_dir); or any image folder of
faces (--config.data.name=image_folder --config.data.source_dir=...). Code: 64 floats for both models. Denoising:
Gaussian noise, sigma 0.1 (S3 states no level), clean targets; the NL-means row is the
classical denoiser on the same noisy test images. Adam 1e-3 (S3), batch 32, 200 epochs.

  python launch.py --config=configs/studies/s3_faces.py --workdir=DIR
"""

from configs import default
from configs.studies.common import study_config

NOISE = {'data': {'noise': {'kind': 'gaussian', 'sigma': 0.1}}}


def get_config():
  c = default.get_config()
  c.model.update(name='cae', latent_dim=64, hidden_dim=512, activation='relu', batch_norm=False)
  c.loss.name = 'mse'
  c.optimizer.update(name='adam', learning_rate=1e-3)
  c.batch_size = 32
  c.num_epochs = 200
  c.eval_every_epochs = 20
  c.checkpoint_every_epochs = 20
  fc = {'model': {'name': 'fc_ae'}}
  cae = {'model': {'name': 'cae', 'widths': (32, 64, 128)}}
  return study_config(c, 's3_faces', {
      'fc_ae': fc,
      'cae': cae,
      'fc_ae_denoise': {**fc, **NOISE},
      'cae_denoise': {**cae, **NOISE},
  }, evals=dict(pca={}, nl_means={}))
