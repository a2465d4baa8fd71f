"""flax-cae: fast convolutional autoencoders in JAX/Flax.

  import flax_cae
  model = flax_cae.load('cifar10_best256')     # a shipped model, an export or a workdir
  out = model.reconstruct(images)              # uint8 or [0, 1] float images, any size
  streams = model.compress(images)             # one .fcae stream (bytes) per image
  images = model.decompress(streams)

`load`, `Model` and `shipped_models` live in flax_cae/api.py; they are imported on first
use, so importing one of the package's folders does not load the rest.
"""

__version__ = '0.1.0'
__all__ = ['Model', 'load', 'shipped_models', '__version__']


def __getattr__(name):
  if name in ('load', 'Model', 'shipped_models'):
    from flax_cae import api  # pylint: disable=g-import-not-at-top
    return getattr(api, name)
  raise AttributeError(f"module 'flax_cae' has no attribute {name!r}")
