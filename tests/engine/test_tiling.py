"""Tile plans and blocks: every output pixel belongs to exactly one block, and each block holds
every tile that touches its pixels."""
import numpy as np
import pytest

from modalseg.engine.tiling import plan_blocks, plan_tiles


@pytest.mark.parametrize("width,height,rows,block_width", [(8192, 1000, 0, 4096), (1000, 700, 2, 300),
                                                            (4096, 512, 0, 4096), (5000, 5000, 3, 1200)])
def test_blocks_partition_the_raster_and_hold_their_halo(width, height, rows, block_width):
    plan = plan_tiles(width, height, 512, 77, 32)
    blocks = plan_blocks(plan, rows, block_width)
    owner = np.zeros((height, width), np.int32)
    for block in blocks:
        owner[block.rows.start:block.rows.end, block.columns.start:block.columns.end] += 1
        # "about" the width asked for: equal runs of tile columns, one stride of slack
        assert block.columns.end - block.columns.start <= block_width + (plan.tile_width - plan.overlap)
        for tile in plan.all_tiles():
            touches = (tile.x < block.columns.end and tile.x + plan.tile_width > block.columns.start and
                       tile.y < block.rows.end and tile.y + plan.tile_height > block.rows.start)
            inside = (block.columns.first_tile <= tile.column <= block.columns.last_tile and
                      block.rows.first_tile <= tile.row <= block.rows.last_tile)
            assert not touches or inside
    assert (owner == 1).all()
    assert len({b.columns for b in blocks}) <= -(-width // block_width)
    if width <= block_width:
        assert len({b.columns for b in blocks}) == 1  # no column split, no recomputed tiles


def test_column_split_costs_one_tile_column_per_border():
    plan = plan_tiles(8192, 512, 512, 77, 32)
    blocks = plan_blocks(plan, 0, 4096)
    computed = sum(b.columns.last_tile - b.columns.first_tile + 1 for b in blocks)
    assert len(blocks) == 2 and computed == len(plan.xs) + 1


def test_a_tile_size_or_overlap_the_model_cannot_take_is_a_plain_error():
    from modalseg.engine import EngineError

    with pytest.raises(EngineError, match="tile size 500 must be a multiple of 32 for this model"):
        plan_tiles(1000, 1000, 500, 64, 32)
    with pytest.raises(EngineError, match=r"overlap \(512 px\) must be at least 0 and smaller than the tile size"):
        plan_tiles(1000, 1000, 512, 512, 32)
