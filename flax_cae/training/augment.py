"""Training-time augmentation, drawn on the device from (seed, step) so a resume draws the
same images."""


import jax
import jax.numpy as jnp

from flax_cae.runtime import streams


AUGMENTS = ('none', 'flip', 'flip_crop')


CROP_PAD = 4  # flip_crop's largest shift in pixels: the usual CIFAR "pad 4, crop 32"


def augment(name: str, images: jax.Array, seed, step) -> jax.Array:
  """Training images [B, H, W, C] as the step sees them, drawn from (seed, step) so a resume
  draws the same ones. 'flip': each mirrored left-right with probability 1/2. 'flip_crop':
  flipped so, then shifted by up to CROP_PAD pixels each way, the uncovered border filled
  by reflection (not zeros: an autoencoder must reproduce what it is given, and black bars
  are no part of any test image)."""
  if name == 'none':
    return images
  key = streams.key(seed, 'augment', step)
  flip = jax.random.bernoulli(key, 0.5, images.shape[:1])  # the draw 'flip' always made
  images = jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)
  if name == 'flip':
    return images
  b, h, w, c = images.shape
  p = CROP_PAD
  padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode='reflect')
  offsets = jax.random.randint(jax.random.fold_in(key, 1), (b, 2), 0, 2 * p + 1)
  crop = lambda x, o: jax.lax.dynamic_slice(x, (o[0], o[1], 0), (h, w, c))
  return jax.vmap(crop)(padded, offsets)
