"""How an image of any size meets a model trained on one size.

- A fully convolutional model (its parameters do not depend on the image size and its code
  is a map on the image's grid: `res_cae` with a spatial code, `rate_cae`, S4's `s4_ae`,
  Balle et al. 2017) takes the
  image whole, padded by reflection to a multiple of its stride (pixels per code cell) and
  cropped back after; an image over MAX_SIDE pixels a side is cut into near-equal tiles of
  at most MAX_SIDE, so memory stays bounded whatever the photograph.
- A model of one size (a dense code, the FC AE) takes the image as tiles of its training
  size, the image padded by reflection to whole tiles; the tiles' outputs are put back in
  place and cropped.

Reflection (not zeros) keeps the padded border like the image, so the code spends little on
it; each tile is coded on its own, so seams may show where neighbouring tiles differ.
"""

import dataclasses
import math

import numpy as np

MAX_SIDE = 1024  # the largest tile side a fully convolutional model runs at once


@dataclasses.dataclass(frozen=True)
class Layout:
  """An image of `size` (h, w) as the model sees it: padded to `padded` (ph, pw), cut into
  `grid` (rows, columns) of tiles of `tile` (th, tw) (one tile: the whole padded image)."""
  size: tuple[int, int]
  padded: tuple[int, int]
  grid: tuple[int, int]

  @property
  def tile(self) -> tuple[int, int]:
    return self.padded[0] // self.grid[0], self.padded[1] // self.grid[1]

  @property
  def tiles(self) -> int:
    return self.grid[0] * self.grid[1]

  def split(self, images: np.ndarray) -> np.ndarray:
    """[N, h, w, C] -> [N * tiles, th, tw, C]: padded by reflection, cut row by row."""
    n, h, w, c = images.shape
    (ph, pw), (gy, gx), (th, tw) = self.padded, self.grid, self.tile
    x = np.pad(images, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode='reflect')
    return x.reshape(n, gy, th, gx, tw, c).transpose(0, 1, 3, 2, 4, 5).reshape(-1, th, tw, c)

  def merge(self, tiles: np.ndarray) -> np.ndarray:
    """split's inverse on outputs: [N * tiles, th, tw, C] -> [N, h, w, C], cropped."""
    (gy, gx), (th, tw) = self.grid, self.tile
    c = tiles.shape[-1]
    x = tiles.reshape(-1, gy, gx, th, tw, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, gy * th, gx * tw, c)[:, :self.size[0], :self.size[1]]


def plan(size: tuple[int, int], trained_size: tuple[int, int], stride: int | None) -> Layout:
  """The layout of an image of `size` for a model trained on `trained_size`: as it is at the
  training size; else padded to a multiple of `stride` when the model is fully
  convolutional (stride not None), or tiled."""
  h, w = size
  if tuple(size) == tuple(trained_size):
    return Layout(size, size, (1, 1))
  if stride:  # whole, or in near-equal tiles of at most MAX_SIDE a side, each a stride multiple
    gy, gx = math.ceil(_up(h, stride) / MAX_SIDE), math.ceil(_up(w, stride) / MAX_SIDE)
    th, tw = _up(math.ceil(h / gy), stride), _up(math.ceil(w / gx), stride)
    return Layout(size, (gy * th, gx * tw), (gy, gx))
  th, tw = trained_size
  return Layout(size, (_up(h, th), _up(w, tw)), (math.ceil(h / th), math.ceil(w / tw)))


def _up(n: int, m: int) -> int:
  return -(-n // m) * m
