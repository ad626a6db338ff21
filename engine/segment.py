"""``run_segmentation``: several rasters in, blended class map and robustness maps out."""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .binding import Source, reference_order
from .blending import FinishedRows, StripAccumulator
from .errors import Cancelled, EngineError
from .grid import Grid, GridRequest, reference_grid
from .normalize import normalize, percentile_range
from .package import ModelPackage
from .postprocess import apply_minimum_mapping_unit
from .reader import BandReader, SourceReader
from .runtime import make_runner, run_with_fallback, softmax
from .tiling import Block, Tile, TilePlan, blend_window, plan_blocks, plan_tiles
from .writers import GeoTiffWriter, class_nodata_value, float_writer

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class OutputPaths:
    classes: str
    robustness: Optional[str] = None
    probabilities: Optional[str] = None
    confidence: Optional[str] = None


@dataclass(frozen=True)
class RunOptions:
    tile_size: Optional[int] = None  # pixels; None = the package's
    overlap: Optional[int] = None  # pixels; None = the package's
    batch_size: int = 4
    device: str = "auto"
    runtime: str = "onnx"
    blend: str = "hann"
    min_mapping_unit: int = 0  # pixels; 0 = off
    threads: Optional[int] = None
    tile_rows_per_block: int = 0  # 0 = the whole raster is one block


@dataclass
class RunReport:
    device: str
    grid: Grid
    tiles: int
    seconds: float
    class_counts: Dict[int, int]
    modalities: List[str]
    outputs: Dict[str, str]
    warnings: List[str] = field(default_factory=list)


@dataclass
class _Batch:
    tiles: List[Tile]
    feeds: Dict[str, np.ndarray]
    valid: np.ndarray  # B x h x w


class _Outputs:
    """The open writers; ``write`` turns finished rows into classes, robustness, probabilities, confidence."""

    def __init__(self, paths: OutputPaths, grid: Grid, package: ModelPackage, used: Sequence[str],
                 warn: Callable[[str], None]):
        meta = package.metadata
        self.values = np.array(meta.class_values, np.uint8)
        self.nodata = class_nodata_value(meta.classes)
        self.used_index = [meta.modality_names.index(m) for m in used]
        self.counts = np.zeros(256, np.int64)
        self.writers: Dict[str, GeoTiffWriter] = {}
        try:
            classes = GeoTiffWriter(paths.classes, grid, 1, np.uint8, self.nodata, ["class"])
            self.writers["classes"] = classes
            classes.set_classes(meta.classes, self.nodata)
            if paths.robustness and not meta.has_robustness:
                warn(f"model '{meta.name}' does not produce robustness maps; none written")
            elif paths.robustness:
                self.writers["robustness"] = float_writer(paths.robustness, grid,
                                                          [f"robustness of {m}" for m in used])
            if paths.probabilities:
                self.writers["probabilities"] = float_writer(paths.probabilities, grid,
                                                             [f"probability of {c.name}" for c in meta.classes])
            if paths.confidence:
                self.writers["confidence"] = float_writer(paths.confidence, grid, ["confidence"])
        except Exception:
            self.abort()
            raise

    def write(self, rows: FinishedRows) -> None:
        invalid = ~rows.valid
        classes = self.values[np.argmax(rows.probabilities, axis=0)]
        classes[invalid] = self.nodata
        self.writers["classes"].write(rows.y, classes)
        self.counts += np.bincount(classes[rows.valid], minlength=256)
        if "robustness" in self.writers:
            robustness = rows.robustness[self.used_index]
            robustness /= np.maximum(robustness.sum(axis=0, keepdims=True), 1e-12)
            robustness[:, invalid] = np.nan
            self.writers["robustness"].write(rows.y, robustness)
        if "probabilities" in self.writers:
            probabilities = rows.probabilities.copy()
            probabilities[:, invalid] = np.nan
            self.writers["probabilities"].write(rows.y, probabilities)
        if "confidence" in self.writers:
            confidence = rows.probabilities.max(axis=0)
            confidence[invalid] = np.nan
            self.writers["confidence"].write(rows.y, confidence)

    def apply_minimum_mapping_unit(self, min_pixels: int) -> None:
        writer = self.writers["classes"]
        classes = writer.read_band(1)
        cleaned = apply_minimum_mapping_unit(classes, min_pixels, self.nodata)
        writer.write(0, cleaned)
        valid = cleaned != self.nodata
        self.counts = np.bincount(cleaned[valid], minlength=256)

    def commit(self) -> Dict[str, str]:
        return {name: writer.commit() for name, writer in self.writers.items()}

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()


def _tile_size(package: ModelPackage, options: RunOptions, log: Callable[[str], None]) -> int:
    meta = package.metadata
    size = options.tile_size or meta.tile_size
    if size < meta.size_multiple or size % meta.size_multiple:
        rounded = max(meta.size_multiple, round(size / meta.size_multiple) * meta.size_multiple)
        log(f"tile size {size} px rounded to {rounded} px (the model needs multiples of {meta.size_multiple})")
        size = rounded
    return size


def _statistics(readers: Dict[str, SourceReader], package: ModelPackage) -> Dict[str, object]:
    """Whole-layer statistics, computed once so tiling cannot change normalisation; also rejects
    layers that are nodata everywhere inside the output extent."""
    stats = {}
    for name, reader in readers.items():
        spec = package.metadata.modality(name).normalization
        data, valid = reader.sample()
        if not valid.any():
            raise EngineError(f"the {name} layer '{reader.source.path}' has no valid pixel inside the output "
                              "extent (nodata everywhere)")
        stats[name] = percentile_range(data, valid, spec.low, spec.high) if spec.type == "percentile" else None
    return stats


def run_segmentation(sources: Sequence[Source], package: ModelPackage, grid_request: GridRequest,
                     outputs: OutputPaths, options: RunOptions = RunOptions(),
                     progress: Optional[Progress] = None, log: Optional[Callable[[str], None]] = None,
                     is_cancelled: Optional[Callable[[], bool]] = None) -> RunReport:
    """Segment the area of ``grid_request`` with ``package``; see DESIGN.md for the data flow."""
    started = time.perf_counter()
    meta = package.metadata
    log = log or (lambda text: None)
    progress = progress or (lambda fraction, text: None)
    is_cancelled = is_cancelled or (lambda: False)
    warnings: List[str] = []

    def warn(text: str) -> None:
        warnings.append(text)
        log("Warning: " + text)

    if not sources:
        raise EngineError("no input layer is bound to the model")
    for source in sources:
        meta.modality(source.modality)  # raises for a modality the package does not have
    used = [m for m in meta.modality_names if any(s.modality == m for s in sources)]
    if meta.presence_input is None and len(used) != len(meta.modalities):
        raise EngineError(f"model '{meta.name}' needs all of {', '.join(meta.modality_names)}")
    grid = reference_grid(reference_order(sources), grid_request)
    gsd = grid.gsd_metres()
    log(f"output grid: {grid.width} x {grid.height} px, pixel {gsd:.3g} m")
    network_grid = grid
    if not meta.gsd.min <= gsd <= meta.gsd.max:
        target = min(max(gsd, meta.gsd.min), meta.gsd.max)
        network_grid = grid.rescaled(target / gsd)
        log(f"the pixel size ({gsd:.3g} m) is outside the range model '{meta.name}' was trained for "
            f"({meta.gsd.min:g}–{meta.gsd.max:g} m): the network runs on a {network_grid.width} x "
            f"{network_grid.height} px grid at {target:g} m and its probabilities are resampled back")
    readers = {s.modality: SourceReader(s, network_grid) for s in sources}
    stats = _statistics(readers, package)
    plan = plan_tiles(network_grid.width, network_grid.height, _tile_size(package, options, log),
                      meta.overlap if options.overlap is None else options.overlap, meta.size_multiple)
    runner = make_runner(package, options.runtime, options.device, options.threads)
    log(f"running on {runner.device}; {plan.count} tiles of {plan.tile_width} x {plan.tile_height} px, "
        f"overlap {plan.overlap} px, blend '{options.blend}', batch {options.batch_size}")
    presence = np.array([[1.0 if m in used else 0.0 for m in meta.modality_names]], np.float32)
    sink = _Outputs(outputs, grid, package, used, warn)
    try:
        if network_grid is grid:
            _run_tiles(plan, readers, stats, package, runner, presence, sink, options, warn, is_cancelled,
                       lambda f, text: progress(f, text))
        else:
            _run_resampled(network_grid, grid, plan, readers, stats, package, runner, presence, sink, used, options,
                           warn, is_cancelled, progress)
        if options.min_mapping_unit > 1:
            log(f"merging regions smaller than {options.min_mapping_unit} px into their neighbours")
            sink.apply_minimum_mapping_unit(options.min_mapping_unit)
        written = sink.commit()
    except BaseException:
        sink.abort()
        raise
    counts = {int(v): int(sink.counts[v]) for v in meta.class_values}
    return RunReport(runner.device, grid, plan.count, time.perf_counter() - started, counts, used, written, warnings)


def _run_tiles(plan: TilePlan, readers, stats, package: ModelPackage, runner, presence: np.ndarray, sink,
               options: RunOptions, warn, is_cancelled, progress: Progress) -> None:
    done = 0
    for block in plan_blocks(plan, options.tile_rows_per_block):
        for tiles_done in _run_block(block, plan, readers, stats, package, runner, presence, sink, options,
                                     warn, is_cancelled):
            done += tiles_done
            progress(done / plan.count, f"tile {done}/{plan.count}")


def _run_resampled(network_grid: Grid, grid: Grid, plan: TilePlan, readers, stats, package: ModelPackage, runner,
                   presence: np.ndarray, sink: "_Outputs", used: Sequence[str], options: RunOptions, warn,
                   is_cancelled, progress: Progress, rows_per_strip: int = 256) -> None:
    """Run on ``network_grid``, keep blended probabilities there, then resample them (bilinear) onto
    ``grid`` strip by strip and derive the outputs from the resampled probabilities."""
    meta = package.metadata
    folder = sink.writers["classes"].path.parent
    scratch = OutputPaths(classes=str(folder / f".modalseg-scratch-{uuid.uuid4().hex[:8]}-classes.tif"),
                          robustness=str(folder / f".modalseg-scratch-{uuid.uuid4().hex[:8]}-robustness.tif")
                          if "robustness" in sink.writers else None,
                          probabilities=str(folder / f".modalseg-scratch-{uuid.uuid4().hex[:8]}-probabilities.tif"))
    coarse = _Outputs(scratch, network_grid, package, used, warn)
    try:
        _run_tiles(plan, readers, stats, package, runner, presence, coarse, options, warn, is_cancelled,
                   lambda f, text: progress(0.9 * f, text))
        probabilities = BandReader(coarse.writers["probabilities"].close_for_reading(),
                                   tuple(range(1, len(meta.classes) + 1)), grid, "bilinear")
        robustness = (BandReader(coarse.writers["robustness"].close_for_reading(), tuple(range(1, len(used) + 1)),
                                 grid, "bilinear") if "robustness" in coarse.writers else None)
        for y in range(0, grid.height, rows_per_strip):
            if is_cancelled():
                raise Cancelled("cancelled by the user")
            h = min(rows_per_strip, grid.height - y)
            p, valid = probabilities.read(0, y, grid.width, h)
            p /= np.maximum(p.sum(axis=0, keepdims=True), 1e-12)
            full_robustness = None
            if robustness is not None:
                r, r_valid = robustness.read(0, y, grid.width, h)
                valid &= r_valid
                full_robustness = np.zeros((len(meta.modalities), h, grid.width), np.float32)
                full_robustness[sink.used_index] = r
            sink.write(FinishedRows(y, p, full_robustness, valid))
            progress(0.9 + 0.1 * (y + h) / grid.height, "resampling to the output grid")
    finally:
        coarse.abort()


def _prepare(tiles: List[Tile], plan: TilePlan, readers: Dict[str, SourceReader], stats, package: ModelPackage,
             presence: np.ndarray) -> _Batch:
    meta = package.metadata
    h, w = plan.tile_height, plan.tile_width
    feeds = {spec.name: np.zeros((len(tiles), spec.bands, h, w), np.float32) for spec in meta.modalities}
    valid = np.ones((len(tiles), h, w), bool)
    for i, tile in enumerate(tiles):
        for name, reader in readers.items():
            data, ok = reader.read(tile.x, tile.y, w, h)
            feeds[name][i] = normalize(data, ok, meta.modality(name).normalization, stats[name])
            valid[i] &= ok
    if meta.presence_input:
        feeds[meta.presence_input] = np.repeat(presence, len(tiles), axis=0)
    return _Batch(tiles, feeds, valid)


class _BlockAssembler:
    """Blends one block's tile outputs in order and writes rows as soon as no later tile touches them."""

    def __init__(self, block: Block, plan: TilePlan, package: ModelPackage, sink: _Outputs, blend: str,
                 batch_size: int):
        meta = package.metadata
        self.block, self.plan, self.sink, self.blend = block, plan, sink, blend
        # A batch may straddle tile rows: the band must hold every row it can touch before rows are final.
        rows_per_batch = -(-batch_size // len(plan.xs)) + 1
        capacity = plan.tile_height + rows_per_batch * max(1, plan.tile_height - plan.overlap)
        self.accumulator = StripAccumulator(plan.width, plan.height, capacity, len(meta.classes),
                                            len(meta.modalities), plan.ys[block.first_tile_row], meta.has_robustness)
        self.tiles_left = {r: len(plan.xs) for r in range(block.first_tile_row, block.last_tile_row + 1)}
        self.next_row = block.first_tile_row

    def consume(self, batch: _Batch, logits: Optional[np.ndarray], robustness: Optional[np.ndarray]) -> None:
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
        finished = self.accumulator.pop_until(min(end_row, self.block.end_output_row))
        if finished is None:
            return
        skip = max(0, self.block.first_output_row - finished.y)  # halo rows belong to the previous block
        if skip < finished.valid.shape[0]:
            self.sink.write(FinishedRows(finished.y + skip, finished.probabilities[:, skip:],
                                         None if finished.robustness is None else finished.robustness[:, skip:],
                                         finished.valid[skip:]))


def _run_block(block: Block, plan: TilePlan, readers, stats, package: ModelPackage, runner, presence: np.ndarray,
               sink: _Outputs, options: RunOptions, warn, is_cancelled):
    """Run one block; yields the number of tiles finished after each batch.

    Three stages overlap: a reader thread prepares batch i+1 and a writer thread blends and writes
    batch i-1 while the runtime computes batch i (the runtime releases the GIL)."""
    tiles = plan.tiles_in_rows(block.first_tile_row, block.last_tile_row)
    batch_size = max(1, options.batch_size)
    batches = [tiles[i:i + batch_size] for i in range(0, len(tiles), batch_size)]
    assembler = _BlockAssembler(block, plan, package, sink, options.blend, batch_size)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="modalseg-read") as reader_pool, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="modalseg-write") as writer_pool:
        pending = reader_pool.submit(_prepare, batches[0], plan, readers, stats, package, presence)
        written = None
        try:
            for index in range(len(batches)):
                if is_cancelled():
                    raise Cancelled("cancelled by the user")
                batch = pending.result()
                if index + 1 < len(batches):
                    pending = reader_pool.submit(_prepare, batches[index + 1], plan, readers, stats, package,
                                                 presence)
                logits = robustness = None
                if batch.valid.any():  # tiles of nodata only are not run at all
                    try:
                        logits, robustness = run_with_fallback(runner, batch.feeds, warn)
                    except EngineError:
                        raise
                    except Exception as exc:  # runtime errors come in the runtimes' own types
                        raise EngineError("the model failed on a batch of tiles: "
                                          f"{str(exc).splitlines()[0][:300]}") from exc
                if written is not None:
                    written.result()  # re-raises a writer error; also keeps at most one batch queued
                written = writer_pool.submit(assembler.consume, batch, logits, robustness)
                yield len(batch.tiles)
            written.result()
        finally:
            pending.cancel()
