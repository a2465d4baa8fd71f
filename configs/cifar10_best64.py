"""cifar10_best256's recipe at 64 floats, meant to beat PCA-64 on unseen images.

The same three stages (one residual block at 8x8), 1.5x wider (48/96/192 channels), and
the code is one dense vector of 64 floats from the 8x8x192 map (model.code=dense: each float
may draw on the whole image, as PCA's do), training images flipped left-right and shifted by
up to 4 pixels at random (augment=flip_crop: a dense code has many parameters to over-fit
with), trained on -PSNR per image (loss neg_psnr: the mean PSNR the tables report), 40
epochs. best_capacity measures each choice against the recipe: the 4x4x4 code of a fourth
stage (SPATIAL below), MSE (best64_mse), flips alone (best64_flip) and widths 32/64/128
(best64_narrow); docs/studies/best-codes.md.

  python launch.py --config=configs/cifar10_best64.py --workdir=DIR
"""

from configs import cifar10_best256

# What differs from cifar10_best256, as a partial config tree: the studies' best64 members
# use it too (on their own schedule: 60 epochs, as best256's).
OVERRIDES = {'model': {'latent_dim': 64, 'code': 'dense', 'widths': (48, 96, 192)},
             'augment': 'flip_crop',
             'loss': {'name': 'neg_psnr'}}
EPOCHS = 40
# The earlier 64-float code: a fourth stage down to 4x4x4 (best_capacity compares it).
SPATIAL = {'latent_dim': 64, 'widths': (32, 64, 128, 128), 'stage_blocks': (0, 0, 1, 0)}


def get_config():
  c = cifar10_best256.get_config()
  c.update(OVERRIDES)  # merges into c.model, as a study member's overrides do
  c.num_epochs = EPOCHS
  return c
