"""Images of any size: padded to a model's stride, or cut into tiles of its training size,
and put back exactly."""

import numpy as np
import pytest

from flax_cae.evaluation import layout


@pytest.mark.parametrize('size,stride,padded,grid', [
    ((32, 32), 4, (32, 32), (1, 1)),
    ((33, 70), 4, (36, 72), (1, 1)),
    ((33, 70), None, (64, 96), (2, 3)),
    ((5, 7), None, (32, 32), (1, 1)),
    ((3000, 1030), 8, (3000, 1040), (3, 2)),  # large: near-equal tiles of at most 1024
])
def test_plan_pads_to_the_stride_or_to_whole_tiles(size, stride, padded, grid):
  lay = layout.plan(size, (32, 32), stride)
  assert lay.padded == padded and lay.grid == grid
  assert lay.tile == ((32, 32) if stride is None else (padded[0] // grid[0],
                                                        padded[1] // grid[1]))
  assert max(lay.tile) <= layout.MAX_SIDE and (stride is None or lay.tile[0] % stride == 0)


@pytest.mark.parametrize('size,stride', [((33, 70), None), ((33, 70), 8), ((5, 7), None)])
def test_merge_of_split_gives_the_image_back(size, stride):
  x = np.random.default_rng(0).integers(0, 256, (3, *size, 3), np.uint8)
  lay = layout.plan(size, (32, 32), stride)
  tiles = lay.split(x)
  assert tiles.shape == (3 * lay.tiles, *lay.tile, 3)
  np.testing.assert_array_equal(lay.merge(tiles), x)


def test_tiles_are_cut_row_by_row_and_padded_by_reflection():
  x = np.arange(40 * 40, dtype=np.int32).reshape(1, 40, 40, 1)
  lay = layout.plan((40, 40), (32, 32), None)
  tiles = lay.split(x)
  np.testing.assert_array_equal(tiles[0, :, :, 0], x[0, :32, :32, 0])
  np.testing.assert_array_equal(tiles[1, :, :8, 0], x[0, :32, 32:, 0])
  # Past the image's right edge: its columns mirrored (38, 37, ... about column 39).
  np.testing.assert_array_equal(tiles[1, :, 8, 0], x[0, :32, 38, 0])
  np.testing.assert_array_equal(tiles[2, :8, :, 0], x[0, 32:, :32, 0])
