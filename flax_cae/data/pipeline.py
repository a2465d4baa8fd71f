"""Input pipeline: splits kept on the devices as uint8 when they fit, streamed from the host otherwise.

Both paths see examples in the same order: epoch e of a run with seed s visits
`epoch_permutation(s, e, n)`, computed on device and independent of the number of
devices, so 1 and 8 devices train on identical batches. Pixels stay uint8 until
the compiled step converts them to float in [0, 1].
"""

import dataclasses
import os
import queue
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from flax_cae.data import sources

DATA_AXIS = 'data'


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over every device (of every process): pure data parallelism."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices, (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def epoch_permutation(seed: int, epoch: int, n: int, mesh: Mesh) -> jax.Array:
  """The order of the n training examples in `epoch`: depends on (seed, epoch) only."""
  key = jax.random.fold_in(jax.random.key(seed), epoch)
  perm = jax.jit(lambda k: jax.random.permutation(k, n).astype(jnp.int32),
                 out_shardings=replicated(mesh))(key)
  return perm


def device_batch(images: jax.Array, perm: jax.Array, j, batch_size: int,
                 sharding: NamedSharding) -> jax.Array:
  """Batch j of an epoch, gathered on the devices: images[perm[j * B:(j + 1) * B]].

  Traceable (used inside the compiled train step); the result is sharded along the batch axis.
  """
  idx = jax.lax.dynamic_slice_in_dim(perm, j * batch_size, batch_size)
  return jax.lax.with_sharding_constraint(jnp.take(images, idx, axis=0), sharding)


@dataclasses.dataclass
class Split:
  """One split of a data set.

  `images` is a global uint8 array [n_padded, H, W, C] sharded along the batch axis
  when the split lives on the devices, else None and `source` is read per batch.
  Rows past `n` are zero padding (so every device holds the same number of rows).
  """
  name: str
  n: int
  image_shape: tuple[int, int, int]
  images: jax.Array | None = None
  labels: np.ndarray | None = None
  source: Any = None

  @property
  def on_device(self) -> bool:
    return self.images is not None

  def host_batch(self, indices: np.ndarray) -> np.ndarray:
    """uint8 [len(indices), H, W, C] read from the host source (streaming path)."""
    return sources.load_arrays(self.source, indices)['image']


def pad_rows(x: np.ndarray, multiple: int) -> np.ndarray:
  extra = (-len(x)) % multiple
  if extra:
    x = np.concatenate([x, np.zeros((extra, *x.shape[1:]), x.dtype)])
  return x


def load_split(data_config, split: str, mesh: Mesh, pad_multiple: int) -> Split:
  """Opens `split`, and copies it onto the devices if it is under the configured size."""
  kw = source_kwargs(data_config)
  source = sources.get_source(data_config.name, split, **kw)
  shape = tuple(sources.image_shape(data_config.name, **{
      k: v for k, v in kw.items() if k not in ('validation_size', 'test_size')}))
  n = len(source)
  nbytes = n * int(np.prod(shape))
  if nbytes <= data_config.device_memory_limit_mb * 2**20:
    arrays = sources.load_arrays(source)
    images = pad_rows(arrays['image'], pad_multiple)
    on_device = jax.device_put(images, batch_sharding(mesh))
    return Split(split, n, shape, images=on_device, labels=arrays['label'])
  return Split(split, n, shape, source=source)


def source_kwargs(data_config) -> dict:
  d = data_config
  kw = dict(data_dir=os.path.expanduser(d.data_dir), source_dir=d.source_dir or None, download=d.download,
            validation_size=d.validation_size, test_size=d.test_size)
  if d.name == 'image_folder':
    kw.update(image_size=tuple(d.image_size), channels=d.channels)
  return kw


def to_global(batch: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """Host batch -> global array; on many hosts each passes its own rows."""
  return jax.make_array_from_process_local_data(sharding, batch)


class Prefetcher:
  """Reads host batches on a background thread, `depth` ahead of the training loop."""

  def __init__(self, make_batch, items, depth: int = 2):
    self._queue = queue.Queue(maxsize=depth)
    self._thread = threading.Thread(target=self._run, args=(make_batch, items), daemon=True)
    self._thread.start()

  def _run(self, make_batch, items):
    try:
      for item in items:
        self._queue.put(make_batch(item))
    except Exception as e:  # surfaced in the training thread
      self._queue.put(e)

  def get(self):
    item = self._queue.get()
    if isinstance(item, Exception):
      raise item
    return item
