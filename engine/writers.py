"""Tiled, compressed GeoTIFF writers that only ever show a finished file.

Each writer fills a hidden temporary file next to the destination and renames it at ``commit``;
``abort`` deletes it, so a cancelled or failed run leaves nothing behind.
"""
from __future__ import annotations

import errno
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from osgeo import gdal

from .errors import EngineError
from .grid import Grid
from .package import ClassInfo

_GDAL_TYPES = {np.dtype(np.uint8): gdal.GDT_Byte, np.dtype(np.float32): gdal.GDT_Float32}


def _compression() -> Sequence[str]:
    """ZSTD level 1 compresses as well as DEFLATE here at a third of the time; DEFLATE where GDAL lacks it."""
    if "ZSTD" in (gdal.GetDriverByName("GTiff").GetMetadataItem("DMD_CREATIONOPTIONLIST") or ""):
        return ["COMPRESS=ZSTD", "ZSTD_LEVEL=1"]
    return ["COMPRESS=DEFLATE", "ZLEVEL=1"]


def _cog_options(dtype: np.dtype) -> Sequence[str]:
    """The COG driver's spelling of the same compression, and overviews fit for the data: the most
    frequent class for class maps, the mean for shares and probabilities."""
    compression = [option.replace("ZSTD_LEVEL", "LEVEL").replace("ZLEVEL", "LEVEL") for option in _compression()]
    categorical = dtype.kind != "f"
    return [*compression, "BLOCKSIZE=256", "BIGTIFF=IF_SAFER", "NUM_THREADS=2",
            f"PREDICTOR={'STANDARD' if categorical else 'FLOATING_POINT'}",
            f"OVERVIEW_RESAMPLING={'MODE' if categorical else 'AVERAGE'}"]


def _sidecars(path: Path):
    return [path.with_name(path.name + ".aux.xml"), path.with_name(path.name + ".ovr")]


_OS_CAUSES = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
              errno.EROFS: "the file system is read-only", errno.ENOSPC: "no space left on the device",
              errno.EDQUOT: "the disk quota is exhausted", errno.ENOENT: "the folder does not exist"}


def os_cause(error: OSError) -> str:
    """An OS error as the plain cause an analyst reads ("permission denied")."""
    return _OS_CAUSES.get(error.errno, (error.strerror or str(error)).lower())


def _file_in_the_way(folder: Path) -> Optional[Path]:
    """The first part of ``folder`` that exists as a regular file (so nothing can be created below it)."""
    for part in reversed([folder, *folder.parents]):
        if part.exists() and not part.is_dir():
            return part
    return None


def folder_problem(folder: Path) -> Optional[str]:
    """Why files cannot be created in ``folder`` (tried for real: root ignores permission bits),
    or ``None`` when they can."""
    blocking = _file_in_the_way(folder)
    if blocking is not None:
        return f"'{blocking}' is a file, not a folder"
    if not folder.is_dir():
        return "the folder does not exist"
    probe = folder / f".modalseg-probe-{uuid.uuid4().hex[:8]}"
    try:
        with open(probe, "xb"):
            pass
    except OSError as exc:
        return os_cause(exc)
    probe.unlink()
    return None


class GeoTiffWriter:
    def __init__(self, path: str, grid: Grid, bands: int, dtype, nodata: Optional[float],
                 descriptions: Sequence[str] = ()):
        """``nodata`` None: the bands carry no nodata value (a scratch file that is read back only)."""
        self.path = Path(path)
        if self.path.suffix.lower() not in (".tif", ".tiff"):
            raise EngineError(f"output '{path}' must be a GeoTIFF (.tif)")
        problem = folder_problem(self.path.parent)
        if problem:
            raise EngineError(f"cannot write into '{self.path.parent}': {problem}")
        self.dtype = np.dtype(dtype)
        self.temp = self.path.with_name(f".{self.path.stem}.partial-{uuid.uuid4().hex[:8]}.tif")
        options = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "BIGTIFF=IF_SAFER", *_compression(),
                   f"PREDICTOR={3 if self.dtype.kind == 'f' else 2}", "NUM_THREADS=2"]
        self.dataset = None
        with self._writing():
            self.dataset = gdal.GetDriverByName("GTiff").Create(
                str(self.temp), grid.width, grid.height, bands, _GDAL_TYPES[self.dtype], options)
        if self.dataset is None:
            raise EngineError(f"cannot write '{self.path}': {gdal.GetLastErrorMsg() or 'GDAL cannot create it'}")
        self.dataset.SetGeoTransform(grid.geotransform)
        self.dataset.SetProjection(grid.crs_wkt)
        for i in range(bands):
            band = self.dataset.GetRasterBand(i + 1)
            if nodata is not None:
                band.SetNoDataValue(nodata)
            if i < len(descriptions):
                band.SetDescription(descriptions[i])

    def set_classes(self, classes: Sequence[ClassInfo], nodata_value: int) -> None:
        """Colour table and category names (indexed by pixel value) on band 1."""
        table = gdal.ColorTable()
        names = [""] * (max(c.value for c in classes) + 1)
        for c in classes:
            table.SetColorEntry(c.value, (*c.rgb, 255))
            names[c.value] = c.name
        table.SetColorEntry(nodata_value, (0, 0, 0, 0))
        band = self.dataset.GetRasterBand(1)
        band.SetRasterColorTable(table)
        band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
        band.SetRasterCategoryNames(names)

    def write(self, y: int, array: np.ndarray, x: int = 0) -> None:
        """A window whose top-left pixel is (x, y); ``array`` is bands x h x w (or h x w for one band)."""
        array = array.reshape((-1,) + array.shape[-2:]).astype(self.dtype, copy=False)
        with self._writing():
            for i in range(array.shape[0]):
                self.dataset.GetRasterBand(i + 1).WriteArray(array[i], x, y)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """GDAL's and the OS's write failures (disk full...) as one sentence naming the output."""
        try:
            yield
        except RuntimeError as exc:  # GDAL raises when its exceptions are on
            detail = " ".join(str(exc).split())[:300]
            raise EngineError(f"cannot write '{self.path}': {detail}") from None
        except OSError as exc:
            raise EngineError(f"cannot write '{self.path}': {os_cause(exc)}") from None

    def close_for_reading(self) -> str:
        """Close the temporary file and return its path (``abort`` still removes it)."""
        self.dataset = None
        return str(self.temp)

    def read_band(self, index: int = 1) -> np.ndarray:
        self.dataset.FlushCache()
        return self.dataset.GetRasterBand(index).ReadAsArray()

    def finish(self, cloud_optimized: bool = False) -> None:
        """Close the hidden file; ``cloud_optimized`` rewrites it as a COG (with overviews), still
        under a hidden name."""
        with self._writing():
            self.dataset.FlushCache()
            self.dataset = None  # closes the file; GDAL writes PAM metadata (.aux.xml) now
        if cloud_optimized:
            self._rewrite_as_cog()

    def publish(self) -> str:
        """Rename the finished file (and its sidecars) into place."""
        with self._writing():
            for stale in [self.path] + _sidecars(self.path):
                if stale.exists():
                    stale.unlink()
            os.replace(self.temp, self.path)
            for temp_side, final_side in zip(_sidecars(self.temp), _sidecars(self.path)):
                if temp_side.exists():
                    os.replace(temp_side, final_side)
        return str(self.path)

    def _rewrite_as_cog(self) -> None:
        tiled = self.temp
        self.temp = tiled.with_name(tiled.name.replace(".partial-", ".cog-"))
        try:
            written = gdal.Translate(str(self.temp), str(tiled), format="COG",
                                     creationOptions=list(_cog_options(self.dtype)))
        except RuntimeError as exc:  # GDAL raises when its exceptions are on
            raise EngineError(f"cannot write '{self.path}' as a Cloud-Optimized GeoTIFF: {exc}") from None
        finally:
            for leftover in [tiled] + _sidecars(tiled):
                if leftover.exists():
                    leftover.unlink()
        if written is None:
            raise EngineError(f"cannot write '{self.path}' as a Cloud-Optimized GeoTIFF")
        written = None  # closed (its .aux.xml, holding the category names, written) before the rename

    def abort(self) -> None:
        self.dataset = None
        for leftover in [self.temp] + _sidecars(self.temp):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass


def class_nodata_value(classes: Sequence[ClassInfo]) -> int:
    """0 when no class uses it (the usual 'unlabelled' value), else 255."""
    values = {c.value for c in classes}
    if 0 not in values:
        return 0
    if 255 not in values:
        return 255
    raise EngineError("the model uses both 0 and 255 as class values; no value is left for nodata")


# Nodata of the share / probability outputs (all 0-1): a finite value no share can take, because a
# NaN in a file breaks other tools' statistics, overviews and raster calculators.
FLOAT_NODATA = -1.0


def float_writer(path: Optional[str], grid: Grid, descriptions: Sequence[str],
                 nodata: Optional[float] = FLOAT_NODATA) -> Optional[GeoTiffWriter]:
    if not path:
        return None
    return GeoTiffWriter(path, grid, len(descriptions), np.float32, nodata, descriptions)
