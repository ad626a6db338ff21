"""``run_segmentation``: several rasters in, blended class map and robustness maps out."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .binding import Source, reference_order
from .blending import FinishedRows, divide_by_band_sum
from .errors import WARNING_PREFIX, Cancelled, EngineError
from .gdal_mode import gdal_exceptions
from .grid import Grid, GridRequest, reference_grid
from .inputs import OpenInputs, open_inputs, used_modalities
from .outputs import OutputPaths, OutputSet, check_output_folders, check_outputs
from .package import ModelPackage, PackageMetadata
from .pipeline import Progress, TilePipeline
from .reader import BandReader, SourceReader, bounded_gdal_cache
from .runtime import NetworkLoader, cpu_threads, make_runner
from .trust import degenerate_map_warning, pixel_size_warning, report_held_out_accuracy
from .vocabulary import DEFAULT_GROUND_WINDOW_M

__all__ = ["RunOptions", "RunReport", "run_segmentation"]


@dataclass(frozen=True)
class RunOptions:
    tile_size: Optional[int] = None  # pixels; None = the package's
    overlap: Optional[int] = None  # pixels; None = the package's
    batch_size: int = 4
    device: str = "auto"  # a key of vocabulary.DEVICES
    runtime: str = "onnx"  # a key of vocabulary.RUNTIMES
    # Which graph of the package runs: a key of vocabulary.PRECISIONS (segment's parameter defaults to
    # auto), or None = the graph the package was loaded from, so figures measured on it stay its own.
    precision: Optional[str] = None
    blend: str = "hann"  # a key of vocabulary.BLEND_WINDOWS
    min_mapping_unit: int = 0  # pixels; 0 = off
    smoothing_radius: int = 0  # pixels of the majority filter's disk; 0 = off
    threads: Optional[int] = None
    tile_rows_per_block: int = 0  # 0 = all rows in one block (rows stream through a band anyway)
    # Wider rasters are split into blocks of columns: memory follows this width, not the raster's,
    # for one extra tile column per block border. 0 = never split.
    max_block_width: int = 4096
    cloud_optimized: bool = False  # rewrite the outputs as COGs with overviews at the end
    ground_window_m: float = DEFAULT_GROUND_WINDOW_M  # ground filter of a DSM given without a DTM
    # Rebuilds the torch network of a package (models.networks.registry.load_network); needed by
    # the torch runtime only, and passed in because the engine does not import models.
    network_loader: Optional[NetworkLoader] = None
    # Dask scheduler running the blocks (engine.distributed): "local:N" starts N worker processes,
    # "tcp://host:port" uses an existing cluster; None runs them in this process.
    scheduler: Optional[str] = None


@dataclass
class RunReport:
    device: str
    grid: Grid
    tiles: int
    seconds: float
    model_seconds: float  # inside the runtime's calls: the rest is reading, blending and writing
    class_counts: Dict[int, int]
    modalities: List[str]
    outputs: Dict[str, str]
    warnings: List[str] = field(default_factory=list)


def _tile_size(meta: PackageMetadata, options: RunOptions, log: Callable[[str], None]) -> int:
    size = options.tile_size or meta.tile_size
    if size < meta.size_multiple or size % meta.size_multiple:
        rounded = max(meta.size_multiple, round(size / meta.size_multiple) * meta.size_multiple)
        log(f"tile size {size} px rounded to {rounded} px (the model needs multiples of {meta.size_multiple})")
        size = rounded
    return size


def _check_valid_data(pipeline: TilePipeline, readers: Dict[str, SourceReader], sink: OutputSet) -> None:
    """Nodata everywhere is only known once every tile was read (tiles without data are not run)."""
    for name, reader in readers.items():
        if not pipeline.seen_valid.get(name):
            raise EngineError(f"the {name} layer '{reader.source.path}' has no valid pixel inside the output "
                              "extent (nodata everywhere)")
    if not sink.counts.any():
        raise EngineError("the layers have no valid pixel in common inside the output extent")


@gdal_exceptions()  # held until the reader and writer threads are done
def run_segmentation(sources: Sequence[Source], package: ModelPackage, grid_request: GridRequest,
                     outputs: OutputPaths, options: RunOptions = RunOptions(),
                     progress: Optional[Progress] = None, log: Optional[Callable[[str], None]] = None,
                     is_cancelled: Optional[Callable[[], bool]] = None) -> RunReport:
    """Segment the area of ``grid_request`` with ``package``; see ARCHITECTURE.md (data flow) for the steps.

    Raises ``EngineError`` (bad input, failed model) or ``Cancelled``; either way no output is left."""
    started = time.perf_counter()
    meta = package.metadata
    log = log or (lambda text: None)
    progress = progress or (lambda fraction, text: None)
    warnings: List[str] = []

    def warn(text: str) -> None:
        warnings.append(text)
        log(WARNING_PREFIX + text)

    if not sources:
        raise EngineError("no input layer is bound to the model")
    for source in sources:
        meta.modality(source.modality)  # raises for a modality the package does not have
    used = used_modalities(meta, sources)
    if meta.presence_input is None and len(used) != len(meta.modalities):
        raise EngineError(f"model '{meta.name}' needs all of {', '.join(meta.modality_names)}")
    if options.scheduler:
        from .distributed import check_scheduler  # lazy: dask is optional

        check_scheduler(options.scheduler)
    check_outputs(outputs, [path for s in sources for path in (s.path, s.subtract_path) if path])
    check_output_folders(outputs)
    grid = reference_grid(reference_order(sources), grid_request)
    far_off = pixel_size_warning(grid.gsd_metres(), meta)
    if far_off:
        warn(far_off)
    report_held_out_accuracy(meta, used, log, warn, false_colour=any(s.estimate_blue for s in sources))
    if not grid.has_crs:
        warn("no input layer has a coordinate reference system: the run uses the layers' own coordinates "
             "(pixel sizes taken as metres) and the outputs have no CRS either")
    with bounded_gdal_cache(_gdal_cache_bytes(grid, outputs, meta, used, options.max_block_width)), \
            open_inputs(sources, meta, grid, Path(outputs.classes).parent, warn, log, _tile_size(meta, options, log),
                        options.overlap, options.ground_window_m, is_cancelled or (lambda: False)) as inputs:
        network_grid, readers, plan = inputs.network_grid, inputs.readers, inputs.plan
        runner = make_runner(package, options.runtime, options.device, options.threads, options.network_loader,
                             options.precision, warn)
        log(f"running on {runner.device}; {plan.count} tiles of {plan.tile_width} x {plan.tile_height} px, "
            f"overlap {plan.overlap} px, blend '{options.blend}', batch {options.batch_size}")
        pipeline = inputs.pipeline(runner, options.blend, options.batch_size, warn, is_cancelled or (lambda: False))
        run_blocks = pipeline.run if not options.scheduler else _dask_blocks(package, inputs, options, pipeline, log)
        sink = OutputSet(outputs, grid, meta, used, warn)
        try:
            if network_grid is grid:
                run_blocks(sink, progress, options.tile_rows_per_block, options.max_block_width)
            else:
                _run_resampled(pipeline, run_blocks, network_grid, grid, sink, used, options, progress)
            _check_valid_data(pipeline, readers, sink)
            if options.smoothing_radius > 0:
                log(f"smoothing the class map (majority over a disk of {options.smoothing_radius} px radius)")
            if options.min_mapping_unit > 1:
                log(f"merging regions smaller than {options.min_mapping_unit} px into their neighbours")
            if options.smoothing_radius > 0 or options.min_mapping_unit > 1:
                sink.clean_classes(options.smoothing_radius, options.min_mapping_unit)
            degenerate = degenerate_map_warning(sink.counts, meta, pipeline.texture)
            if degenerate:
                warn(degenerate)
            if options.cloud_optimized:
                log("writing Cloud-Optimized GeoTIFFs (with overviews)")
            written = sink.commit(options.cloud_optimized)
        except BaseException:
            sink.abort()
            raise
    counts = {int(v): int(sink.counts[v]) for v in meta.class_values}
    return RunReport(runner.device, grid, plan.count, time.perf_counter() - started, pipeline.model_seconds, counts,
                     used, written, warnings)


def _gdal_cache_bytes(grid: Grid, outputs: OutputPaths, meta: PackageMetadata, used: Sequence[str],
                      max_block_width: int) -> int:
    """Enough GDAL block cache for a row of output blocks (256 px high, all outputs, one block of
    columns plus a block each side) plus 64 MB for reading: partly written compressed blocks must
    stay cached until complete."""
    bytes_per_pixel = 1 + (1 if outputs.dominant else 0) + 4 * ((len(used) if outputs.robustness else 0) +
                               (len(meta.classes) if outputs.probabilities else 0) + (1 if outputs.confidence else 0))
    width = grid.width if max_block_width <= 0 else min(grid.width, max_block_width + 512)
    return 64 * 1024 * 1024 + 256 * width * bytes_per_pixel


def _dask_blocks(package: ModelPackage, inputs: OpenInputs, options: RunOptions, pipeline: TilePipeline,
                 log: Callable[[str], None]):
    """The blocks as Dask tasks (``engine.distributed``), from the job planned here."""
    from .distributed import BlockJob, DaskBlocks  # lazy: dask is optional

    job = BlockJob(str(package.onnx_path), inputs.sources, {name: r.stretch for name, r in inputs.readers.items()},
                   inputs.stats, inputs.network_grid, inputs.plan, inputs.presence, inputs.used, options.blend,
                   options.batch_size, options.runtime, options.device, options.threads or cpu_threads(), options.network_loader, options.precision)
    return DaskBlocks(options.scheduler, job, pipeline, log)


def _run_resampled(pipeline: TilePipeline, run_blocks: Callable[..., None], network_grid: Grid, grid: Grid,
                   sink: OutputSet, used: Sequence[str], options: RunOptions, progress: Progress,
                   rows_per_strip: int = 256) -> None:
    """Run on ``network_grid`` (``run_blocks``: this process's pipeline or the Dask tasks), keep
    blended probabilities there, then resample them (bilinear) onto ``grid`` strip by strip and
    derive the outputs from the resampled probabilities."""
    meta = pipeline.meta
    tag = uuid.uuid4().hex[:8]
    scratch = OutputPaths(
        classes=str(sink.folder / f".modalseg-scratch-{tag}-classes.tif"),
        robustness=str(sink.folder / f".modalseg-scratch-{tag}-robustness.tif") if sink.needs_robustness
        else None,
        probabilities=str(sink.folder / f".modalseg-scratch-{tag}-probabilities.tif"))
    coarse = OutputSet(scratch, network_grid, meta, used, pipeline.warn, scratch=True)
    try:
        run_blocks(coarse, lambda f, text: progress(0.9 * f, text), options.tile_rows_per_block,
                   options.max_block_width)
        # Which output pixels are valid: GDAL's bilinear warp of the one-band class scratch, whose nodata
        # marks where no tile landed (its values are not used); the many-band float scratch carries
        # no nodata value, so GDAL warps it with its fast kernel (2.5 times faster on 6 bands).
        validity = BandReader(coarse.writers["classes"].close_for_reading(), (1,), grid, "bilinear")
        probabilities = BandReader(coarse.writers["probabilities"].close_for_reading(),
                                   tuple(range(1, len(meta.classes) + 1)), grid, "bilinear")
        robustness = (BandReader(coarse.writers["robustness"].close_for_reading(), tuple(range(1, len(used) + 1)),
                                 grid, "bilinear") if "robustness" in coarse.writers else None)
        progress(0.9, "resampling to the output grid")  # said once; the strips only move the bar
        for y in range(0, grid.height, rows_per_strip):
            if pipeline.is_cancelled():
                raise Cancelled("cancelled by the user")
            h = min(rows_per_strip, grid.height - y)
            # Where no tile landed the float scratch holds 0 in every band, and elsewhere probabilities
            # and robustness shares each sum to 1: so the bilinear sum of a pixel's bands is the weight of
            # its valid neighbours, and dividing by it averages over those alone, as a nodata-aware warp does.
            _, valid = validity.read(0, y, grid.width, h)
            p = divide_by_band_sum(probabilities.read(0, y, grid.width, h)[0])
            full_robustness = None
            if robustness is not None:
                r = divide_by_band_sum(robustness.read(0, y, grid.width, h)[0])
                full_robustness = np.zeros((len(meta.modalities), h, grid.width), np.float32)
                full_robustness[sink.used_index] = r
            sink.write(FinishedRows(y, p, full_robustness, valid.astype(np.float32)))
            progress(0.9 + 0.1 * (y + h) / grid.height, "")
        validity.close()
        probabilities.close()
        if robustness is not None:
            robustness.close()
    finally:
        coarse.abort()
