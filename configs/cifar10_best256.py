"""A CIFAR-10 code of 256 floats that beats PCA-256 on unseen images.

Its run is recorded in docs/records/cifar10_best256 (shipped as cifar10_best256).

res_cae: a conv stem and three stages (32, 64, 128 channels at 32x32, 16x16, 8x8; a
stride-2 conv between stages), one residual block at the 8x8 stage only (stage_blocks
(0, 0, 1): depth where it is cheapest, as the levers screen measures), a 1x1 conv to an 8x8x4 code (256 floats, nothing else reaches the
decoder), mirrored with transposed convs; GELU, no BatchNorm. AdamW 2e-3 with one epoch of
warm-up and cosine decay, batch 128, MSE, 60 epochs. Sibling at 64 floats:
cifar10_best64.py.

  python launch.py --config=configs/cifar10_best256.py --workdir=DIR

docs/studies/best-codes.md has its results beside PCA at the same floats.
"""

from configs import default


def get_config(latent_dim: int = 256, widths=(32, 64, 128), stage_blocks=(0, 0, 1)):
  c = default.get_config()
  c.data.name = 'cifar10'
  c.data.validation_size = 5000
  c.data.test_size = 0
  c.model.update(name='res_cae', widths=widths, blocks=0, stage_blocks=stage_blocks,
                 latent_dim=latent_dim, activation='gelu', batch_norm=False)
  c.loss.name = 'mse'
  c.optimizer.update(name='adamw', learning_rate=2e-3, weight_decay=1e-4)
  c.optimizer.schedule.update(name='warmup_cosine', warmup_epochs=1.0, end_value_factor=0.01)
  c.batch_size = 128
  c.eval_batch_size = 500
  c.num_epochs = 60
  c.eval_every_epochs = 5
  c.checkpoint_every_epochs = 5
  c.num_sample_images = 10
  return c
