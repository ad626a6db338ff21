"""Aligned raster stacks (one folder = one grid) and windowed reads with GDAL.

A :class:`RasterStack` binds modality names to files that share one grid (same size,
geotransform and CRS, checked on open) plus an optional label raster. Reads are windows, so
a stack over a large orthophoto never loads it whole; small rasters may be cached.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...engine.gdal_mode import gdal_exceptions


def _gdal():
    from osgeo import gdal
    return gdal


@dataclass
class RasterStack:
    """Rasters on one grid: ``files`` maps a modality name to a path; ``label`` is optional."""

    name: str
    files: Dict[str, Path]
    label: Optional[Path] = None
    region: str = ""
    _cache: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @gdal_exceptions()
    def __post_init__(self) -> None:
        gdal = _gdal()
        ref = None
        self.width = self.height = 0
        for key, path in list(self.files.items()) + ([("label", self.label)] if self.label else []):
            ds = gdal.Open(str(path))
            grid = (ds.RasterXSize, ds.RasterYSize, tuple(round(v, 6) for v in ds.GetGeoTransform()))
            if ref is None:
                ref = grid
                self.width, self.height = grid[0], grid[1]
                self.geotransform = ds.GetGeoTransform()
                self.projection = ds.GetProjection()
            elif grid != ref:
                raise ValueError(f"{self.name}: '{path}' is not on the grid of the other rasters "
                                 f"({grid} != {ref}); align it first")
        self.gsd = abs(self.geotransform[1])

    @property
    def modalities(self) -> List[str]:
        return list(self.files)

    @gdal_exceptions()
    def _read(self, path: Path, x: int, y: int, w: int, h: int) -> Tuple[np.ndarray, np.ndarray]:
        gdal = _gdal()
        ds = gdal.Open(str(path))
        data = ds.ReadAsArray(x, y, w, h)
        data = data[None] if data.ndim == 2 else data
        valid = np.ones((h, w), bool)
        nd = ds.GetRasterBand(1).GetNoDataValue()
        if nd is not None:
            # multi-band optical: nodata only where every band holds it (a black band is not nodata)
            valid &= ~np.all(data == nd, axis=0)
        data = data.astype(np.float32)
        valid &= np.all(np.isfinite(data), axis=0)
        return data, valid

    def read(self, key: str, x: int = 0, y: int = 0, w: Optional[int] = None,
             h: Optional[int] = None, cache: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """Window (C x h x w float32, valid mask h x w) of a modality, or of ``'label'``."""
        w = self.width - x if w is None else w
        h = self.height - y if h is None else h
        path = self.label if key == "label" else self.files[key]
        if cache and self.width * self.height <= 4_000_000:
            if key not in self._cache:
                self._cache[key] = self._read(path, 0, 0, self.width, self.height)
            d, v = self._cache[key]
            return d[:, y:y + h, x:x + w], v[y:y + h, x:x + w]
        return self._read(path, x, y, w, h)

    def read_label(self, x: int = 0, y: int = 0, w: Optional[int] = None,
                   h: Optional[int] = None) -> np.ndarray:
        d, v = self.read("label", x, y, w, h)
        return np.where(v, d[0], 0).astype(np.uint8)


def find_lidar_stacks(folder: "str | Path", modalities: Sequence[str] = ("rgb", "nir", "ndsm")
                      ) -> List[RasterStack]:
    """One stack per ``<stem>_label.tif`` in a LiDAR HD sample folder, with the wanted siblings."""
    stacks = []
    for label in sorted(Path(folder).glob("*_label.tif")):
        stem = label.name[: -len("_label.tif")]
        files = {}
        for suffix in modalities:
            p = label.with_name(f"{stem}_{suffix}.tif")
            if p.exists():
                files[suffix] = p
        if files:
            stacks.append(RasterStack(stem, files, label, region=Path(folder).name))
    return stacks
