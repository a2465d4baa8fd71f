"""The embedded default: ImprovedCAE on scikit-image's bundled LFW subset (no download).

200 grayscale 25x25 images (100 faces, 100 non-faces; S3 studied LFW faces). It
finishes in about a minute on a 2-core CPU. Every other config imports this one
and overrides a few fields.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name='lfw_subset',        # mnist | colored_mnist | cifar10 | cinic10 | image_folder | lfw | lfw_subset
      data_dir='~/tensorflow_datasets',  # where prepared (array_record) data sets live
      source_dir='',            # a folder holding the official files, for offline machines
      download=True,            # let TFDS fetch the official files when online
      validation_size=20,       # carved from train (all but cinic10)
      test_size=20,             # carved from train where there is no test split
      image_size=(32, 32),      # image_folder and lfw only: resize to (height, width)
      channels=3,               # image_folder and lfw only: 1 (grayscale) or 3 (RGB)
      device_memory_limit_mb=2048,  # splits up to this size live on the devices as uint8
      # Denoising (S3, S4): inputs corrupted on the device, targets clean (flax_cae/data/noise.py).
      noise=dict(kind='none',   # none | gaussian | salt_pepper
                 sigma=0.1,     # gaussian: standard deviation, pixels in [0, 1]
                 amount=0.05),  # salt_pepper: share of pixels set to black or white
  ))

  c.model = ml_collections.ConfigDict(dict(
      name='improved_cae',      # cae (S0) | base_cae, improved_cae (S1) | rate_cae, lenet5 (S2)
                                # | fc_ae (S3) | s4_ae, conv_vae (S4) | res_cae (a residual CAE)
                                # | balle2017 (Balle et al. 2017: a learned codec)
      latent_dim=64,
      widths=(),                # () = the model's own (S1: 16, 32, 64[, 128])
      hidden_dim=512,           # base_cae's hidden dense layer
      activation='leaky_relu',  # relu | leaky_relu | gelu | tanh | sigmoid | elu | silu
      negative_slope=0.01,
      batch_norm=True,
      norm='batch',             # what batch_norm turns on: batch (BatchNorm) | group (GroupNorm, 32 groups)
      dropout_rate=0.0,
      skips=(),                 # improved_cae: encoder stages (1-4) added across the bottleneck
      dtype='float32',          # compute dtype: float32 | bfloat16 (parameters stay float32)
      transposed_conv='subpixel',  # subpixel | dilated: the same layer, two formulations
      conv_input_grad='auto',   # stride-2 convs' input gradient: auto (CPU: subpixel) | subpixel | xla
      rate=8,                   # rate_cae: how many times height and width shrink (2 | 4 | 8 | 16)
      beta=1.0,                 # conv_vae: loss = reconstruction (summed over pixels) + beta * KL
      blocks=1,                 # res_cae: residual blocks per stage
      stage_blocks=(),          # res_cae: blocks per stage, e.g. (0, 1, 2); () = blocks at each
      code='spatial',           # res_cae: spatial (1x1 conv to H x W x C) | dense (one vector)
  ))

  c.loss = ml_collections.ConfigDict(dict(
      name='mse',               # mse | l1 | bce | l1+mse | ssim | mse+ssim | neg_psnr;
                                # classifiers (lenet5): cross_entropy
      alpha=0.1, beta=1.0,      # l1+mse: alpha * L1 + beta * MSE
      ssim_weight=1.0,          # mse+ssim: MSE + ssim_weight * (1 - SSIM)
      rd_lambda=0.01,           # codecs (balle2017): bits per pixel + rd_lambda * 255^2 * loss
  ))

  c.optimizer = ml_collections.ConfigDict(dict(
      name='adam', learning_rate=1e-3, weight_decay=0.0, grad_clip_norm=0.0,
      momentum=0.9, nesterov=False, b1=0.9, b2=0.999, eps=1e-8,
      schedule=dict(name='constant', warmup_epochs=0.0, decay_rate=0.1, decay_epochs=(),
                    end_value_factor=0.0),
  ))

  c.augment = 'none'            # none | flip: each training image mirrored left-right with p=1/2
                                # | flip_crop: flipped so, then shifted up to 4 px (border reflected)
  c.ema_decay = 0.0             # > 0: evaluate (and keep) a moving average of the parameters
  c.batch_size = 32
  c.eval_batch_size = 0         # 0 = batch_size
  c.num_epochs = 60
  c.steps_per_call = 0          # 0 = measured default per backend (CPU 1)
  c.cpu_convolutions = 'eigen'  # eigen | xla: which library runs convolutions on XLA's CPU backend
  c.cpu_malloc = 'keep'         # keep | system: on CPU, keep freed host memory (launch.py sets it)
  c.eval_every_epochs = 10
  c.checkpoint_every_epochs = 10
  c.keep_checkpoints = 2        # latest k, plus the best by selection_metric
  # The validation metric that picks the kept checkpoint (and the reported numbers):
  # loss | mse | l1 | psnr | ssim (classifiers: accuracy | cross_entropy); '' = the one
  # early stopping watches.
  c.selection_metric = ''
  c.early_stopping = ml_collections.ConfigDict(dict(
      metric='psnr',            # loss | mse | l1 | psnr | ssim; classifiers: accuracy (validation)
      patience=0,               # evaluations without improvement; 0 = off
      min_delta=0.0,
  ))
  c.log_every_seconds = 10.0
  c.num_sample_images = 8
  c.snapshot_every_epochs = 0   # reconstruction snapshots between evaluations too (0 = only at them)
  return c
