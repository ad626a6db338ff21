"""Tiles through the network: read + normalise, run, blend, write — three stages that overlap."""
from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np

from .blending import FinishedRows, StripAccumulator, weighted_softmax
from .errors import Cancelled, EngineError
from .normalize import Range, normalize
from .package import PackageMetadata
from .reader import SourceReader
from .runtime import run_with_fallback
from .tiling import Block, Tile, TilePlan, blend_window, plan_blocks
from .trust import TextureMeter

Progress = Callable[[float, str], None]


@dataclass
class Batch:
    tiles: List[Tile]
    feeds: Dict[str, np.ndarray]  # network inputs by name
    valid: np.ndarray  # B x h x w: every bound modality has data


class TilePipeline:
    """Everything needed to turn tiles of one grid into finished rows for an output sink."""

    def __init__(self, plan: TilePlan, readers: Dict[str, SourceReader], stats: Dict[str, Optional[Range]],
                 meta: PackageMetadata, runner, presence: np.ndarray, blend: str, batch_size: int,
                 warn: Callable[[str], None], is_cancelled: Callable[[], bool]):
        self.plan, self.readers, self.stats, self.meta, self.runner = plan, readers, stats, meta, runner
        self.presence, self.blend, self.batch_size = presence, blend, max(1, batch_size)
        self.warn, self.is_cancelled = warn, is_cancelled
        self.seen_valid = {name: False for name in readers}  # written by the reader thread only
        self.model_seconds = 0.0
        self.non_finite_reported = False
        self.texture = TextureMeter(meta)  # for the degenerate-map check (engine.trust), reader thread only

    def prepare(self, tiles: List[Tile]) -> Batch:
        h, w = self.plan.tile_height, self.plan.tile_width
        feeds = {spec.name: np.zeros((len(tiles), spec.bands, h, w), np.float32) for spec in self.meta.modalities}
        valid = np.ones((len(tiles), h, w), bool)
        for i, tile in enumerate(tiles):
            for name, reader in self.readers.items():
                data, ok = reader.read(tile.x, tile.y, w, h)
                normalize(data, ok, self.meta.modality(name).normalization, self.stats[name], out=feeds[name][i])
                self.texture.add(name, feeds[name][i], ok)
                valid[i] &= ok
                self.seen_valid[name] = self.seen_valid[name] or bool(ok.any())
        if self.meta.presence_input:
            feeds[self.meta.presence_input] = np.repeat(self.presence, len(tiles), axis=0)
        return Batch(tiles, feeds, valid)

    def infer(self, batch: Batch):
        started = time.perf_counter()
        try:
            logits, robustness = run_with_fallback(self.runner, batch.feeds, self.warn)
            self._drop_non_finite(batch, logits, robustness)
            return logits, robustness
        except EngineError:
            raise
        except Exception as exc:  # runtime errors come in the runtimes' own types
            raise EngineError(f"the model failed on a batch of tiles: {str(exc).splitlines()[0][:300]}") from exc
        finally:
            self.model_seconds += time.perf_counter() - started

    def _drop_non_finite(self, batch: Batch, logits: np.ndarray, robustness: Optional[np.ndarray]) -> None:
        """Pixels where the network gave NaN or inf become nodata (said once), so no output holds them."""
        finite = np.isfinite(logits).all(axis=1)
        if robustness is not None:
            finite &= np.isfinite(robustness).all(axis=1)
        broken = batch.valid & ~finite
        if not broken.any():
            return
        if not self.non_finite_reported:
            self.non_finite_reported = True
            self.warn("the model returned non-finite values (NaN or inf) on some pixels; they are left as nodata")
        batch.valid &= finite
        for array in (logits, robustness):
            if array is not None:
                np.nan_to_num(array, copy=False, nan=0.0, posinf=0.0, neginf=0.0)

    def run(self, sink, progress: Progress, tile_rows_per_block: int = 0, max_block_width: int = 0) -> None:
        blocks = plan_blocks(self.plan, tile_rows_per_block, max_block_width)
        total = sum(tile_count(block) for block in blocks)  # halo tiles run once per block they serve
        done = 0
        for block in blocks:
            for count in self.run_block(block, sink):
                done += count
                # Counted in the plan's tiles, as announced: halo tiles recomputed at block edges
                # are work, not more tiles for the user.
                progress(done / total, f"tile {round(done * self.plan.count / total)}/{self.plan.count}")

    def run_block(self, block: Block, sink) -> Iterator[int]:
        """Run one block; yields the number of tiles finished after each batch.

        A reader thread prepares batch i+1 and a writer thread blends and writes batch i-1 while the
        runtime computes batch i (runtimes and GDAL release the GIL)."""
        tiles = self.plan.tiles_in((block.rows.first_tile, block.rows.last_tile),
                                   (block.columns.first_tile, block.columns.last_tile))
        batches = [tiles[i:i + self.batch_size] for i in range(0, len(tiles), self.batch_size)]
        assembler = BlockAssembler(block, self.plan, self.meta, sink, self.blend, self.batch_size)
        with ThreadPoolExecutor(1, "modalseg-read", initializer=_yield_to_the_runtime) as reader_pool, \
                ThreadPoolExecutor(1, "modalseg-write", initializer=_yield_to_the_runtime) as writer_pool:
            pending = reader_pool.submit(self.prepare, batches[0])
            written = None
            try:
                for index in range(len(batches)):
                    if self.is_cancelled():
                        raise Cancelled("cancelled by the user")
                    batch = pending.result()
                    if index + 1 < len(batches):
                        pending = reader_pool.submit(self.prepare, batches[index + 1])
                    # Tiles of nodata only are not run at all.
                    logits, robustness = self.infer(batch) if batch.valid.any() else (None, None)
                    if written is not None:
                        written.result()  # re-raises a writer error; keeps at most one batch queued
                    written = writer_pool.submit(assembler.consume, batch, logits, robustness)
                    yield len(batch.tiles)
                written.result()
            finally:
                pending.cancel()


def _yield_to_the_runtime() -> None:
    """Lowest CPU priority for this helper thread (Linux gives each thread its own nice value): on a
    CPU the runtime's threads keep the cores and reading / blending fill the gaps they leave, instead
    of preempting one runtime thread and stalling the other at the next barrier."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass  # not allowed here: normal priority, just slower


def tile_count(block: Block) -> int:
    return ((block.rows.last_tile - block.rows.first_tile + 1) *
            (block.columns.last_tile - block.columns.first_tile + 1))


class BlockAssembler:
    """Blends one block's tile outputs in order and writes rows as soon as no later tile touches them."""

    def __init__(self, block: Block, plan: TilePlan, meta: PackageMetadata, sink, blend: str, batch_size: int):
        self.block, self.plan, self.sink, self.blend = block, plan, sink, blend
        columns = block.columns.last_tile - block.columns.first_tile + 1
        left = plan.xs[block.columns.first_tile]
        right = min(plan.width, plan.xs[block.columns.last_tile] + plan.tile_width)
        # A batch may straddle tile rows: the band must hold every row it can touch before rows are final.
        rows_per_batch = -(-batch_size // columns) + 1
        capacity = plan.tile_height + rows_per_batch * max(1, plan.tile_height - plan.overlap)
        self.accumulator = StripAccumulator(left, right - left, plan.height, capacity, len(meta.classes),
                                            len(meta.modalities), plan.ys[block.rows.first_tile],
                                            meta.has_robustness)
        self.tiles_left = {r: columns for r in range(block.rows.first_tile, block.rows.last_tile + 1)}
        self.next_row = block.rows.first_tile

    def consume(self, batch: Batch, logits: Optional[np.ndarray], robustness: Optional[np.ndarray]) -> None:
        if logits is not None:
            logits = np.require(logits, np.float32, "CW")  # weighted in place below
            if robustness is not None:
                robustness = np.require(robustness, np.float32, "CW")
            for i, tile in enumerate(batch.tiles):
                weights = blend_window(self.plan, tile, self.blend) * batch.valid[i]
                tile_robustness = None
                if robustness is not None:
                    tile_robustness = np.multiply(robustness[i], weights, out=robustness[i])
                self.accumulator.add(tile.x, tile.y, weights, weighted_softmax(logits[i], weights), tile_robustness)
        for tile in batch.tiles:
            self.tiles_left[tile.row] -= 1
        while self.next_row <= self.block.rows.last_tile and self.tiles_left[self.next_row] == 0:
            self._emit(self.plan.final_row_end(self.next_row))
            self.next_row += 1

    def _emit(self, end_row: int) -> None:
        rows, columns = self.block.rows, self.block.columns
        # Halo rows and columns belong to the neighbouring blocks.
        c0, c1 = columns.start - self.accumulator.left, columns.end - self.accumulator.left
        for finished in self.accumulator.pop_until(min(end_row, rows.end)):
            skip = max(0, rows.start - finished.y)
            if skip < finished.weight.shape[0]:
                self.sink.write(FinishedRows(
                    finished.y + skip, finished.scores[:, skip:, c0:c1],
                    None if finished.robustness is None else finished.robustness[:, skip:, c0:c1],
                    finished.weight[skip:, c0:c1], columns.start))
