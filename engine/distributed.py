"""The blocks of one run as Dask tasks: the same block code as the single-process path, on a cluster.

``run_segmentation`` plans the job once (grid, whole-layer statistics, tiles, blocks with their
halo); with ``RunOptions.scheduler`` set it hands the blocks to ``DaskBlocks`` instead of running
them itself. Each task receives a small picklable ``BlockJob`` (paths, grid, plan, statistics:
nothing big), opens the package and the sources itself, runs ``TilePipeline.run_block`` and writes
its block's outputs to part GeoTIFFs in a hidden folder beside the outputs. The client then reads
the parts through one VRT per output and writes them into the run's own writers, so the final files
carry the same colour table, category names, band descriptions and nodata, and every later step
(smoothing, minimum mapping unit, COG, the resampled path, the atomic rename) is the single-process
code. Per-block settings are identical, so the outputs are bit-identical.

Dask and distributed are optional: this module imports them only when a job runs. Every worker
must read the inputs, the package and the output folder at the same paths as the client.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal

from .binding import Source
from .blending import FinishedRows
from .errors import Cancelled, EngineError
from .gdal_mode import gdal_exceptions
from .grid import Grid, open_raster, reading
from .normalize import Range
from .outputs import OutputPaths, OutputSet
from .package import ModelPackage, load_package
from .pipeline import Progress, TilePipeline, tile_count
from .reader import SourceReader, bounded_gdal_cache
from .runtime import NetworkLoader, make_runner
from .tiling import Block, TilePlan, plan_blocks

LOCAL_PREFIX = "local:"
_ADDRESS = re.compile(r"^(tcp|tls|ws|wss|inproc)://[^\s/]+$")
_CANCEL_MARK = "cancelled"
TASK_RETRIES = 2  # a task that raised is tried this many more times (a killed worker's tasks always rerun)
# A scheduler without workers queues tasks for ever, and workers that stopped answering finish none:
# the job waits this long for a first worker, and this long for a block to finish, then says so.
WORKER_WAIT_S = 60.0
STALL_S = 1800.0
_SETTLED = ("finished", "error", "cancelled")  # a task in these states has a result or an error to fetch
_ROWS_PER_STRIP = 256


def dask_missing() -> Optional[str]:
    """Why the Dask runner cannot run here, or ``None`` when dask and distributed are importable."""
    missing = [name for name in ("dask", "distributed") if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (f"the Dask runner needs the Python package(s) {' and '.join(missing)}, which are not installed; "
            "install them with ModalSeg's dependency installer (profile 'distributed') or "
            "'pip install dask distributed' at the versions in requirements.txt, or leave the scheduler empty")


def check_scheduler(address: str) -> None:
    """``local:N`` (a LocalCluster of N worker processes) or a scheduler address such as
    ``tcp://host:8786``; checked before anything is read."""
    if address.startswith(LOCAL_PREFIX):
        count = address[len(LOCAL_PREFIX):]
        if not count.isdigit() or int(count) < 1:
            raise EngineError(f"Dask scheduler '{address}': write local:N with N worker processes (1 or more), "
                              "e.g. local:2")
    elif not _ADDRESS.match(address):
        raise EngineError(f"Dask scheduler '{address}' is neither local:N nor a scheduler address such as "
                          "tcp://host:8786")
    missing = dask_missing()
    if missing:
        raise EngineError(missing)


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs to run blocks of one job, and nothing big: paths and small values."""
    package_path: str
    sources: Tuple[Source, ...]
    stretches: Dict[str, Optional[Tuple[np.ndarray, np.ndarray]]]  # decided once on the client
    stats: Dict[str, Optional[Range]]
    grid: Grid  # the grid the network runs on
    plan: TilePlan
    presence: np.ndarray
    used: Tuple[str, ...]
    blend: str
    batch_size: int
    runtime: str
    device: str
    # ONNX Runtime's sums depend on its thread count: the same count as the single-process run
    # (with the same blocks and batches) gives the same bits.
    threads: int
    network_loader: Optional[NetworkLoader]
    precision: Optional[str]
    # one per job: a worker's cached runner serves the blocks of one job, so what its runtime
    # learned about the GPU (a smaller batch after running out of memory, a move to the CPU) and
    # warned about in that job's log does not silently carry into the next job
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class BlockResult:
    counts: np.ndarray  # class value -> pixels of this block
    seen_valid: Dict[str, bool]
    model_seconds: float
    warnings: Tuple[str, ...]
    parts: Dict[str, str]  # output name -> part file


def block_grid(grid: Grid, block: Block) -> Grid:
    """The part of a north-up ``grid`` that holds ``block``'s output pixels."""
    x0, px, rx, y0, ry, py = grid.geotransform
    return replace(grid, geotransform=(x0 + block.columns.start * px, px, rx, y0 + block.rows.start * py, ry, py),
                   width=block.columns.end - block.columns.start, height=block.rows.end - block.rows.start)


class _ShiftedSink:
    """Finished rows in the whole grid's pixels, written into a part that starts at (x0, y0)."""

    def __init__(self, part: OutputSet, x0: int, y0: int):
        self.part, self.x0, self.y0 = part, x0, y0

    def write(self, rows: FinishedRows) -> None:
        self.part.write(replace(rows, x=rows.x - self.x0, y=rows.y - self.y0))


_RUNNERS: Dict[str, Tuple[ModelPackage, object]] = {}


def _runner(job: BlockJob):
    """The package and runtime session of the job, kept by the worker process for the job's next
    blocks (building an ONNX Runtime session costs more than a small block); the next job replaces
    them, so a long-lived worker holds one session."""
    key = job.job_id  # a job's package and runtime settings never change
    if key not in _RUNNERS:
        _RUNNERS.clear()
        package = load_package(job.package_path)
        _RUNNERS[key] = (package, make_runner(package, job.runtime, job.device, job.threads, job.network_loader,
                                              job.precision))
    return _RUNNERS[key]


def run_block_task(job: BlockJob, block: Block, parts: OutputPaths, parts_folder: str,
                   scratch: bool = False) -> BlockResult:
    """One Dask task: run ``block`` exactly as the single-process path does and publish its part files
    (``scratch``: written as the outputs they are parts of, ``OutputSet``'s scratch files).

    It stops when the client cancelled the job (the parts folder gone or marked)."""
    folder = Path(parts_folder)

    def cancelled() -> bool:
        return not folder.is_dir() or (folder / _CANCEL_MARK).exists()

    if cancelled():
        raise Cancelled("the job was cancelled")
    warnings: List[str] = []
    with gdal_exceptions(), bounded_gdal_cache(256 * 1024 * 1024):
        package, runner = _runner(job)
        meta = package.metadata
        readers = {source.modality: SourceReader(source, job.grid) for source in job.sources}
        try:
            for name, stretch in job.stretches.items():
                readers[name].stretch = stretch
            pipeline = TilePipeline(job.plan, readers, job.stats, meta, runner, job.presence, job.blend,
                                    job.batch_size, warnings.append, cancelled)
            part = OutputSet(parts, block_grid(job.grid, block), meta, job.used, warnings.append, scratch)
            try:
                for _ in pipeline.run_block(block, _ShiftedSink(part, block.columns.start, block.rows.start)):
                    pass
                written = part.commit()
            except BaseException:
                part.abort()
                raise
        finally:
            for reader in readers.values():
                reader.close()
    return BlockResult(part.counts, dict(pipeline.seen_valid), pipeline.model_seconds, tuple(warnings), written)


def _connect(address: str):
    """A client of a new LocalCluster (``local:N``) or of the scheduler at ``address``."""
    from distributed import Client, LocalCluster  # optional dependency: imported when a job runs

    try:
        if address.startswith(LOCAL_PREFIX):
            cluster = LocalCluster(n_workers=int(address[len(LOCAL_PREFIX):]), threads_per_worker=1,
                                   processes=True, dashboard_address=":0", silence_logs=40)
            return Client(cluster), cluster
        return Client(address, timeout="10s"), None
    except (OSError, TimeoutError) as exc:
        raise EngineError(f"cannot reach the Dask scheduler '{address}': {str(exc).splitlines()[0][:200]}") from None


def _wait_for_a_worker(client, address: str) -> None:
    if client.scheduler_info().get("workers"):
        return
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except (TimeoutError, OSError):
        raise EngineError(f"the Dask scheduler '{address}' has no worker: none joined in {_duration(WORKER_WAIT_S)}; "
                          f"start workers for it (dask worker {address}) or run on this machine with "
                          f"{LOCAL_PREFIX}N") from None


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 120 else f"{seconds:g} s"


class DaskBlocks:
    """Runs a pipeline's blocks as Dask tasks; called like ``TilePipeline.run``."""

    def __init__(self, address: str, job: BlockJob, pipeline: TilePipeline, log: Callable[[str], None]):
        self.address, self.job, self.pipeline, self.log = address, job, pipeline, log
        self.workers: Dict[str, int] = {}  # worker address -> process id, once connected
        self.seconds: Dict[str, float] = {}  # wall time of the tasks and of the assembly, once done

    def __call__(self, sink: OutputSet, progress: Progress, tile_rows_per_block: int = 0,
                 max_block_width: int = 0) -> None:
        blocks = plan_blocks(self.job.plan, tile_rows_per_block, max_block_width)
        folder = sink.folder / f".modalseg-parts-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        client = cluster = None
        try:
            client, cluster = _connect(self.address)
            _wait_for_a_worker(client, self.address)
            self.workers = client.run(os.getpid)
            self.log(f"Dask: {len(blocks)} blocks as tasks on {len(self.workers)} worker(s) of {self.address}")
            if len(blocks) < 2 * len(self.workers):
                self.log("Dask: fewer than two blocks per worker, so some workers idle; fewer tile rows per block "
                         "split the job finer (tile_rows_per_block, --block-tile-rows)")
            started = time.perf_counter()
            results = self._run(client, blocks, sink, folder, progress)
            ran = time.perf_counter()
            self._assemble(results, sink, folder)
            self.seconds = {"tasks": ran - started, "assembly": time.perf_counter() - ran}
            self.log(f"Dask: the {len(blocks)} tasks took {self.seconds['tasks']:.1f} s; assembling their parts "
                     f"{self.seconds['assembly']:.1f} s")
        finally:
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()
            _remove(folder)

    def _run(self, client, blocks: Sequence[Block], sink: OutputSet, folder: Path,
             progress: Progress) -> List[BlockResult]:
        outputs = list(sink.writers)  # named as OutputPaths fields
        futures = {}
        for index, block in enumerate(blocks):
            parts = OutputPaths(**{name: str(folder / f"block-{index:06d}-{name}.tif") for name in outputs})
            future = client.submit(run_block_task, self.job, block, parts, str(folder), sink.scratch,
                                   retries=TASK_RETRIES,
                                   pure=False, key=f"modalseg-block-{folder.name[-8:]}-{index}")
            futures[future] = index
        total = sum(tile_count(block) for block in blocks)
        done_blocks, done_tiles, results = 0, 0, [None] * len(blocks)
        pending = dict(futures)
        last_finished = time.monotonic()
        try:
            # Polled from this thread (a cancel is seen within a tenth of a second); results are fetched
            # with one client.gather, which runs in this client's own event loop and waits out a task
            # that Dask reschedules when the worker holding a finished block died before sending it.
            # Not distributed.as_completed: it runs on the default client's loop (another client's, when
            # one exists in this process), and its with_results fetches race each other.
            while pending:
                if self.pipeline.is_cancelled():
                    raise Cancelled("cancelled by the user")
                batch = [future for future in pending if future.status in _SETTLED]
                if not batch:
                    if time.monotonic() - last_finished > STALL_S:
                        raise EngineError(f"no Dask task finished in {_duration(STALL_S)} ({done_blocks} of "
                                          f"{len(blocks)} blocks done): the workers of '{self.address}' stopped "
                                          "or cannot keep up; check that they are running, or use fewer tile "
                                          "rows per block")
                    time.sleep(0.1)
                    continue
                last_finished = time.monotonic()
                for future, value in zip(batch, self._gather(client, batch)):
                    del pending[future]
                    results[futures[future]] = value
                    done_blocks += 1
                    done_tiles += tile_count(blocks[futures[future]])
                    progress(done_tiles / total, f"block {done_blocks}/{len(blocks)} "
                             f"(tile {round(done_tiles * self.job.plan.count / total)}/{self.job.plan.count})")
        except BaseException:
            (folder / _CANCEL_MARK).touch(exist_ok=True)
            client.cancel(list(futures))
            raise
        return results

    @staticmethod
    def _gather(client, batch) -> List[BlockResult]:
        """The results of settled tasks; a failed task's error in one sentence."""
        from distributed import CancelledError

        try:
            return client.gather(batch)
        except (EngineError, Cancelled):
            raise
        except CancelledError:
            raise EngineError("a Dask task was cancelled by the scheduler or another client") from None
        except Exception as error:
            text = str(error).splitlines()[0][:300] if str(error) else ""
            raise EngineError(f"a Dask task failed: {type(error).__name__}: {text}") from None

    def _assemble(self, results: Sequence[BlockResult], sink: OutputSet, folder: Path) -> None:
        """Every output from a VRT over its parts, written strip by strip into the run's own writer."""
        reported = set()
        for result in results:
            for name, seen in result.seen_valid.items():
                self.pipeline.seen_valid[name] = self.pipeline.seen_valid.get(name, False) or seen
            self.pipeline.model_seconds += result.model_seconds
            sink.counts += result.counts
            for text in result.warnings:
                if text not in reported:  # a warning each block gave is said once
                    reported.add(text)
                    self.pipeline.warn(text)
        # One thread per output: GDAL reads, decompresses and compresses without the GIL.
        with ThreadPoolExecutor(len(sink.writers), "modalseg-assemble") as pool:
            copies = [pool.submit(_copy_parts, [result.parts[name] for result in results], writer,
                                  str(folder / f"{name}.vrt")) for name, writer in sink.writers.items()]
            for copy in copies:
                copy.result()


def _copy_parts(parts: Sequence[str], writer, vrt_path: str) -> None:
    """Write the mosaic of ``parts`` (a VRT, as they tile the grid) into ``writer`` strip by strip."""
    try:
        vrt = gdal.BuildVRT(vrt_path, list(parts))
    except RuntimeError as exc:  # GDAL raises when its exceptions are on
        vrt, reason = None, " ".join(str(exc).split())[:300]
    else:
        reason = gdal.GetLastErrorMsg()
    if vrt is None:
        raise EngineError(f"cannot assemble the parts of '{writer.path}': {reason}")
    vrt = None  # written to disk; read back below like any raster
    mosaic = open_raster(vrt_path)
    for y in range(0, mosaic.RasterYSize, _ROWS_PER_STRIP):
        h = min(_ROWS_PER_STRIP, mosaic.RasterYSize - y)
        with reading(vrt_path):
            strip = mosaic.ReadAsArray(0, y, mosaic.RasterXSize, h)
        writer.write(y, strip)


def _remove(folder: Path, attempts: int = 5) -> None:
    """Remove the parts folder; a task still finishing on a worker may add a file meanwhile, so
    try again briefly."""
    for _ in range(attempts):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(0.5)
