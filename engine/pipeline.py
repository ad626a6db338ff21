"""Tiles through the network: read + normalise, run, blend, write — three stages that overlap."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np

from .blending import FinishedRows, StripAccumulator
from .errors import Cancelled, EngineError
from .normalize import Range, normalize
from .package import PackageMetadata
from .reader import SourceReader
from .runtime import run_with_fallback, softmax
from .tiling import Block, Tile, TilePlan, blend_window, plan_blocks

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

    def prepare(self, tiles: List[Tile]) -> Batch:
        h, w = self.plan.tile_height, self.plan.tile_width
        feeds = {spec.name: np.zeros((len(tiles), spec.bands, h, w), np.float32) for spec in self.meta.modalities}
        valid = np.ones((len(tiles), h, w), bool)
        for i, tile in enumerate(tiles):
            for name, reader in self.readers.items():
                data, ok = reader.read(tile.x, tile.y, w, h)
                feeds[name][i] = normalize(data, ok, self.meta.modality(name).normalization, self.stats[name])
                valid[i] &= ok
                self.seen_valid[name] = self.seen_valid[name] or bool(ok.any())
        if self.meta.presence_input:
            feeds[self.meta.presence_input] = np.repeat(self.presence, len(tiles), axis=0)
        return Batch(tiles, feeds, valid)

    def infer(self, batch: Batch):
        try:
            return run_with_fallback(self.runner, batch.feeds, self.warn)
        except EngineError:
            raise
        except Exception as exc:  # runtime errors come in the runtimes' own types
            raise EngineError(f"the model failed on a batch of tiles: {str(exc).splitlines()[0][:300]}") from exc

    def run(self, sink, tile_rows_per_block: int, progress: Progress) -> None:
        done = 0
        for block in plan_blocks(self.plan, tile_rows_per_block):
            for count in self.run_block(block, sink):
                done += count
                progress(done / self.plan.count, f"tile {done}/{self.plan.count}")

    def run_block(self, block: Block, sink) -> Iterator[int]:
        """Run one block; yields the number of tiles finished after each batch.

        A reader thread prepares batch i+1 and a writer thread blends and writes batch i-1 while the
        runtime computes batch i (runtimes and GDAL release the GIL)."""
        tiles = self.plan.tiles_in_rows(block.first_tile_row, block.last_tile_row)
        batches = [tiles[i:i + self.batch_size] for i in range(0, len(tiles), self.batch_size)]
        assembler = BlockAssembler(block, self.plan, self.meta, sink, self.blend, self.batch_size)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="modalseg-read") as reader_pool, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="modalseg-write") as writer_pool:
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


class BlockAssembler:
    """Blends one block's tile outputs in order and writes rows as soon as no later tile touches them."""

    def __init__(self, block: Block, plan: TilePlan, meta: PackageMetadata, sink, blend: str, batch_size: int):
        self.block, self.plan, self.sink, self.blend = block, plan, sink, blend
        # A batch may straddle tile rows: the band must hold every row it can touch before rows are final.
        rows_per_batch = -(-batch_size // len(plan.xs)) + 1
        capacity = plan.tile_height + rows_per_batch * max(1, plan.tile_height - plan.overlap)
        self.accumulator = StripAccumulator(plan.width, plan.height, capacity, len(meta.classes),
                                            len(meta.modalities), plan.ys[block.first_tile_row], meta.has_robustness)
        self.tiles_left = {r: len(plan.xs) for r in range(block.first_tile_row, block.last_tile_row + 1)}
        self.next_row = block.first_tile_row

    def consume(self, batch: Batch, logits: Optional[np.ndarray], robustness: Optional[np.ndarray]) -> None:
        if logits is not None:
            probabilities = softmax(logits.astype(np.float32, copy=False))
            for i, tile in enumerate(batch.tiles):
                self.accumulator.add(tile.x, tile.y, blend_window(self.plan, tile, self.blend), probabilities[i],
                                     None if robustness is None else robustness[i], batch.valid[i])
        for tile in batch.tiles:
            self.tiles_left[tile.row] -= 1
        while self.next_row <= self.block.last_tile_row and self.tiles_left[self.next_row] == 0:
            self._emit(self.plan.final_row_end(self.next_row))
            self.next_row += 1

    def _emit(self, end_row: int) -> None:
        for finished in self.accumulator.pop_until(min(end_row, self.block.end_output_row)):
            skip = max(0, self.block.first_output_row - finished.y)  # halo rows belong to the previous block
            if skip < finished.valid.shape[0]:
                self.sink.write(FinishedRows(finished.y + skip, finished.probabilities[:, skip:],
                                             None if finished.robustness is None else finished.robustness[:, skip:],
                                             finished.valid[skip:]))
