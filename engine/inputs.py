"""A run's inputs opened once, for everything that needs tiles exactly as ``segment`` feeds them:
``run_segmentation`` itself, the int8 calibration (``models.quantize``) and the benchmarks that time
the bare runtime on the engine's own tiles. Opening means: the DTM of a DSM given alone estimated,
one reader per modality on the grid the network runs on, value ranges checked (with their
warnings), whole-layer statistics, the tile plan and the presence vector of the bound modalities.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .binding import Source
from .errors import EngineError
from .grid import Grid
from .ground import estimated_ground
from .normalize import Range, percentile_range
from .package import PackageMetadata
from .pipeline import TilePipeline
from .reader import SourceReader
from .tiling import TilePlan, plan_tiles
from .vocabulary import DEFAULT_GROUND_WINDOW_M

Log = Callable[[str], None]


@dataclass
class OpenInputs:
    meta: PackageMetadata
    sources: Tuple[Source, ...]  # as read: a DSM given alone comes with its estimated DTM
    used: Tuple[str, ...]  # the package's modalities with a layer bound, in the package's order
    network_grid: Grid
    readers: Dict[str, SourceReader]
    stats: Dict[str, Optional[Range]]
    plan: TilePlan

    @property
    def presence(self) -> np.ndarray:
        """1 x modalities of the package: 1 where a layer is bound."""
        return np.array([[1.0 if m in self.used else 0.0 for m in self.meta.modality_names]], np.float32)

    def pipeline(self, runner=None, blend: str = "hann", batch_size: int = 1, warn: Log = lambda text: None,
                 is_cancelled: Callable[[], bool] = lambda: False) -> TilePipeline:
        """The tile pipeline over these inputs (``runner`` None: it only prepares tiles)."""
        return TilePipeline(self.plan, self.readers, self.stats, self.meta, runner, self.presence, blend, batch_size,
                            warn, is_cancelled)


def used_modalities(meta: PackageMetadata, sources: Sequence[Source]) -> List[str]:
    """The package's modalities that have a layer bound, in the package's order."""
    return [m for m in meta.modality_names if any(s.modality == m for s in sources)]


@contextmanager
def open_inputs(sources: Sequence[Source], meta: PackageMetadata, grid: Grid, scratch: Path, warn: Log,
                log: Log = lambda text: None, tile_size: Optional[int] = None, overlap: Optional[int] = None,
                ground_window_m: float = DEFAULT_GROUND_WINDOW_M,
                is_cancelled: Callable[[], bool] = lambda: False) -> Iterator[OpenInputs]:
    """Open ``sources`` for a run on the output ``grid`` (``scratch``: the folder of the estimated
    DTM, removed on exit like the readers). Tile size and overlap default to the package's."""
    network_grid = network_grid_of(grid, meta, log)
    readers: Dict[str, SourceReader] = {}
    with estimated_ground(sources, grid, scratch, ground_window_m, warn, is_cancelled) as read_sources, \
            _closing(readers):
        readers.update({s.modality: SourceReader(s, network_grid) for s in read_sources})
        for name, reader in readers.items():
            reader.check_values(meta.modality(name), warn)
        stats = layer_statistics(readers, meta)
        plan = plan_tiles(network_grid.width, network_grid.height, tile_size or meta.tile_size,
                          meta.overlap if overlap is None else overlap, meta.size_multiple)
        yield OpenInputs(meta, tuple(read_sources), tuple(used_modalities(meta, sources)), network_grid, readers,
                         stats, plan)


def layer_statistics(readers: Dict[str, SourceReader], meta: PackageMetadata) -> Dict[str, Optional[Range]]:
    """Whole-layer percentiles for the modalities normalised by them, computed once so tiling
    cannot change normalisation (other recipes need no statistics: nothing is read here)."""
    stats: Dict[str, Optional[Range]] = {}
    for name, reader in readers.items():
        spec = meta.modality(name).normalization
        stats[name] = None
        if spec.type == "percentile":
            data, valid = reader.sample()
            if not valid.any():
                raise EngineError(f"the {name} layer '{reader.source.path}' has no valid pixel inside the output "
                                  "extent (nodata everywhere)")
            stats[name] = percentile_range(data, valid, spec.low, spec.high)
    return stats


def pixel_size_in_range(gsd: float, meta: PackageMetadata) -> float:
    """The pixel size nearest ``gsd`` (metres) within the package's GSD range."""
    return meta.gsd.nearest(gsd)


def outside_range_text(gsd: float, meta: PackageMetadata) -> str:
    """'the pixel size (0.2 m) is outside the range model 'x' runs at (0.5–2 m)', or '... differs from
    the one model 'x' runs at (0.5 m)' for a package run at one pixel size."""
    low, high = meta.gsd.min, meta.gsd.max
    if low == high:
        return f"the pixel size ({gsd:.3g} m) differs from the one model '{meta.name}' runs at ({low:g} m)"
    return f"the pixel size ({gsd:.3g} m) is outside the range model '{meta.name}' runs at ({low:g}–{high:g} m)"


def network_grid_of(grid: Grid, meta: PackageMetadata, log: Log) -> Grid:
    """The grid the network runs on: the output grid, resampled into the package's GSD range if needed."""
    gsd = grid.gsd_metres()
    log(f"output grid: {grid.width} x {grid.height} px, pixel {gsd:.3g} m")
    if meta.gsd.min <= gsd <= meta.gsd.max:
        return grid
    target = pixel_size_in_range(gsd, meta)
    network_grid = grid.rescaled(target / gsd)
    log(f"{outside_range_text(gsd, meta)}: the network runs on a {network_grid.width} x "
        f"{network_grid.height} px grid at {target:g} m and its probabilities are resampled back")
    return network_grid


@contextmanager
def _closing(readers: Dict[str, SourceReader]):
    """GDAL datasets must not outlive the call: a traceback keeps frames alive, and QGIS crashes at
    exit while datasets are still open."""
    try:
        yield
    finally:
        for reader in readers.values():
            reader.close()
