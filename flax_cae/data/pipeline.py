"""Input pipeline: splits kept on the devices as uint8 when they fit, streamed from the host otherwise.

Both paths see examples in the same order: epoch e of a run with seed s visits
`epoch_permutation(s, e, n)`, computed on device and independent of the number of
devices and processes, so 1 and 8 devices, or 1 and 2 hosts, train on identical
batches. Pixels stay uint8 until the compiled step converts them to float in [0, 1].

On many hosts each process reads only the rows its own devices hold: its block of
a device-resident split, and its slice of every streamed batch (the same
per-process split `tfds.split_for_jax_process` makes, but of each global batch, so
the order does not depend on the process count).
"""

import dataclasses
import functools
import os
import queue
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from flax_cae.runtime import streams
from flax_cae.data import sources


def to_float(images_u8):
  """uint8 [B, H, W, C] -> float32 in [0, 1], inside the compiled step."""
  return images_u8.astype(jnp.float32) / 255.0


DATA_AXIS = 'data'


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over every device (of every process): pure data parallelism.

  Devices are ordered by process, so each process holds one contiguous block of
  rows of every batch and reads exactly that block.
  """
  devices = devices if devices is not None else jax.devices()
  return Mesh(np.asarray(sorted(devices, key=lambda d: (d.process_index, d.id))), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def epoch_permutation(seed: int, epoch: int, n: int, mesh: Mesh) -> jax.Array:
  """The order of the n training examples in `epoch`: depends on (seed, epoch) only."""
  return _permutation_fn(n, mesh)(seed, epoch)


def epoch_permutations(seeds: jax.Array, epoch: int, n: int, mesh: Mesh) -> jax.Array:
  """[M, n]: the orders of members trained together, each `epoch_permutation` of its seed."""
  return _permutation_fn(n, mesh, members=True)(seeds, epoch)


@functools.lru_cache(maxsize=None)
def _permutation_fn(n: int, mesh: Mesh, members: bool = False):
  """Compiled once per (n, mesh), not once per epoch."""

  def perm(seed, epoch):  # the key is made inside: no host array crosses processes
    return jax.random.permutation(streams.key(seed, 'data_order', epoch), n).astype(jnp.int32)
  if members:
    perm = jax.vmap(perm, in_axes=(0, None))
  return jax.jit(perm, out_shardings=replicated(mesh))


def process_rows(sharding: NamedSharding, n_rows: int, axis: int = 0) -> slice:
  """The rows [start, stop) along `axis` (of length n_rows) that this process's devices hold."""
  shape = (1,) * axis + (n_rows,)
  spans = [index[axis].indices(n_rows)[:2]
           for index in sharding.addressable_devices_indices_map(shape).values()]
  return slice(min(a for a, _ in spans), max(b for _, b in spans))


def to_global(local: np.ndarray, sharding: NamedSharding, global_shape) -> jax.Array:
  """This process's rows (see `process_rows`) -> one global array over every process."""
  return jax.make_array_from_process_local_data(sharding, local, tuple(global_shape))


def host_copy(x: jax.Array) -> np.ndarray:
  """A replicated global array as numpy on every process (no cross-host transfer)."""
  return np.asarray(x.addressable_data(0))


def device_batch(data, perm: jax.Array, j, batch_size: int, sharding: NamedSharding):
  """Batch j of an epoch, gathered on the devices: x[perm[j * B:(j + 1) * B]] for each
  array x of `data` (images, or (images, labels)).

  Traceable (used inside the compiled train step); the result is sharded along the batch axis.
  """
  idx = jax.lax.dynamic_slice_in_dim(perm, j * batch_size, batch_size)
  return jax.tree.map(
      lambda x: jax.lax.with_sharding_constraint(jnp.take(x, idx, axis=0), sharding), data)


@dataclasses.dataclass
class Split:
  """One split of a data set.

  `images` is a global uint8 array [n_padded, H, W, C] sharded along the batch axis
  when the split lives on the devices, else None and `source` is read per batch; `labels`
  (int32 [n_padded], sharded the same way) likewise. Rows past `n` are zero padding (so
  every device holds the same number of rows).
  """
  name: str
  n: int
  image_shape: tuple[int, int, int]
  images: jax.Array | None = None
  source: Any = None
  labels: jax.Array | None = None
  num_classes: int = 0

  @property
  def on_device(self) -> bool:
    return self.images is not None

  def host_batch(self, indices: np.ndarray) -> np.ndarray:
    """uint8 [len(indices), H, W, C] read from the host source (streaming path)."""
    return sources.load_arrays(self.source, indices)['image']

  def global_batch(self, indices: np.ndarray, sharding: NamedSharding,
                   axis: int = 0) -> tuple[jax.Array, jax.Array]:
    """(images, labels) at `indices` (any shape; axis `axis` is the sharded batch axis;
    entries outside [0, n) give zero padding) as global arrays. Each process reads only the
    rows its devices hold."""
    rows = process_rows(sharding, indices.shape[axis], axis)
    local = indices[(slice(None),) * axis + (rows,)]
    flat = local.ravel()
    valid = (flat >= 0) & (flat < self.n)
    images = np.zeros((flat.size, *self.image_shape), np.uint8)
    labels = np.zeros((flat.size,), np.int32)
    if valid.any():
      read = sources.load_arrays(self.source, flat[valid])
      images[valid], labels[valid] = read['image'], read['label']
    return (to_global(images.reshape(*local.shape, *self.image_shape), sharding,
                      (*indices.shape, *self.image_shape)),
            to_global(labels.reshape(local.shape), sharding, indices.shape))


def pad_to(x: np.ndarray, length: int) -> np.ndarray:
  """x with zero rows appended up to `length` rows."""
  if len(x) < length:
    x = np.concatenate([x, np.zeros((length - len(x), *x.shape[1:]), x.dtype)])
  return x


def load_split(data_config, split: str, mesh: Mesh, pad_multiple: int) -> Split:
  """Opens `split`, and copies it onto the devices if it is under the configured size."""
  kw = source_kwargs(data_config)
  source = sources.get_source(data_config.name, split, **kw)
  shape = tuple(sources.image_shape(data_config.name, **prepare_kwargs(data_config)))
  n = len(source)
  num_classes = len(getattr(source, 'class_names', ()))
  nbytes = n * int(np.prod(shape))
  if nbytes <= data_config.device_memory_limit_mb * 2**20:
    # Zero rows pad the split so every device holds as many rows; each process
    # reads only its own block.
    n_padded = n + (-n) % pad_multiple
    sharding = batch_sharding(mesh)
    rows = process_rows(sharding, n_padded)
    real = np.arange(rows.start, min(rows.stop, n))
    local = sources.load_arrays(source, real) if len(real) else {
        'image': np.zeros((0, *shape), np.uint8), 'label': np.zeros((0,), np.int32)}
    images = to_global(pad_to(local['image'], rows.stop - rows.start), sharding,
                       (n_padded, *shape))
    labels = to_global(pad_to(local['label'], rows.stop - rows.start), sharding, (n_padded,))
    return Split(split, n, shape, images=images, labels=labels, num_classes=num_classes)
  return Split(split, n, shape, source=source, num_classes=num_classes)


def source_kwargs(data_config) -> dict:
  d = data_config
  kw = dict(data_dir=os.path.expanduser(d.data_dir), source_dir=d.source_dir or None, download=d.download,
            validation_size=d.validation_size, test_size=d.test_size)
  if getattr(sources.DATASETS.get(d.name), 'builder', None) in sources.SIZED:
    kw.update(image_size=tuple(d.image_size), channels=d.channels)
  return kw


def prepare_kwargs(data_config) -> dict:
  """source_kwargs without the split sizes: what sources.prepare and image_shape take."""
  kw = source_kwargs(data_config)
  del kw['validation_size'], kw['test_size']
  return kw


PREFETCH_THREAD = 'flax_cae_prefetch'


class Prefetcher:
  """Reads host batches on a background thread, `depth` ahead of the training loop.
  `close()` stops the thread (a run that ends mid-epoch leaves no reader behind)."""

  def __init__(self, make_batch, items, depth: int = 2):
    self._queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(make_batch, items), daemon=True,
                                    name=PREFETCH_THREAD)
    self._thread.start()

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def _run(self, make_batch, items):
    try:
      for item in items:
        if self._stop.is_set() or not self._put(make_batch(item)):
          return
    except Exception as e:  # surfaced in the training thread
      self._put(e)

  def close(self):
    self._stop.set()
    self._thread.join()

  def get(self):
    item = self._queue.get()
    if isinstance(item, Exception):
      raise item
    return item


def chunks(split: Split, size: int):
  """(uint8 [size, H, W, C] images, bool [size] mask) over the split, padded at the end."""
  for start in range(0, split.n, size):
    idx = np.arange(start, start + size)
    if split.on_device:
      yield padded_slice(split.images, start, size), jnp.asarray(idx < split.n)
    else:
      rows = split.host_batch(idx[idx < split.n])
      yield jnp.asarray(pad_to(rows, size)), jnp.asarray(idx < split.n)


@functools.partial(jax.jit, static_argnums=(2,))
def padded_slice(images, start, size):
  """images[start:start + size] on the device, zero-padded past the end (one program per size)."""
  images = jnp.concatenate([images, jnp.zeros((size, *images.shape[1:]), images.dtype)])
  return jax.lax.dynamic_slice_in_dim(images, start, size)


def first_images(split: Split, n: int):
  """The split's first n images (uint8, on the device where the split is)."""
  return next(chunks(split, max(n, 1)))[0][:n]
