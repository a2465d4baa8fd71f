"""cifar10_best256's recipe at 64 floats, meant to beat PCA-64 on unseen images.

The same three stages (one residual block at 8x8), 1.5x wider (48/96/192 channels: at
32/64/128 the model trained no higher than it validated and more epochs bought nothing), and
the code is one dense vector of 64 floats from the 8x8x192 map (model.code=dense: each float
may draw on the whole image, as PCA's do), training images flipped left-right and shifted by
up to 4 pixels at random (augment=flip_crop: the spatial 64-float code over-fitted after
epoch 25, and with flips alone the dense code still trained 0.56 dB above its validation
PSNR), trained on -PSNR per image (loss neg_psnr: the mean PSNR the tables report), 40
epochs. Chosen on validation PSNR over the 4x4x4 code of a fourth stage (SPATIAL below, the
sibling until commit c0d19b5), over MSE (best_capacity's best64_mse), over flips alone
(best64_flip) and over widths 32/64/128 (best64_narrow); docs/studies/best-codes.md.

  python launch.py --config=configs/cifar10_best64.py --workdir=DIR
"""

from configs import cifar10_best256

# What differs from cifar10_best256, as a partial config tree: the studies' best64 members
# use it too (on their own schedule: 60 epochs, as best256's).
OVERRIDES = {'model': {'latent_dim': 64, 'code': 'dense', 'widths': (48, 96, 192)},
             'augment': 'flip_crop',
             'loss': {'name': 'neg_psnr'}}
# As measured (docs/studies/best-codes.md) at widths 32/64/128: validation still rose 0.02 dB in the last 5
# epochs, yet a 60-epoch run ended 0.04 dB lower on validation (22.54 against 22.58 dB).
EPOCHS = 40
# The earlier 64-float code: a fourth stage down to 4x4x4 (best_capacity compares it).
SPATIAL = {'latent_dim': 64, 'widths': (32, 64, 128, 128), 'stage_blocks': (0, 0, 1, 0)}


def get_config():
  c = cifar10_best256.get_config()
  c.update(OVERRIDES)  # merges into c.model, as a study member's overrides do
  c.num_epochs = EPOCHS
  return c
