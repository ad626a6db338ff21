"""A folder of raster sheets read as one raster (national orthophotos and DSMs come in sheets).

``open_raster`` opens a folder through the VRT built here, so binding, grids, readers and Dask
workers all see the same mosaic; a ``.vrt`` file the analyst built works as it is. The VRT lives in
GDAL's memory file system, one per folder and process, built from the sorted file names, so every
process builds the same one.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, List

from osgeo import gdal

from .errors import EngineError

SHEET_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")
_MOSAICS: Dict[str, str] = {}


def sheet_files(folder: str) -> List[str]:
    """The raster sheets of ``folder`` (not its subfolders), sorted by name."""
    return sorted(str(path) for path in Path(folder).iterdir()
                  if path.is_file() and path.suffix.lower() in SHEET_SUFFIXES and not path.name.startswith("."))


def sheets_vrt(folder: str) -> str:
    """A VRT mosaic of the sheets in ``folder``; an ``EngineError`` when they cannot form one."""
    folder = os.path.abspath(folder)
    if folder in _MOSAICS:
        return _MOSAICS[folder]
    files = sheet_files(folder)
    if not files:
        raise EngineError(f"'{folder}' is a folder without raster sheets ({', '.join(SHEET_SUFFIXES)}); give a "
                          "raster file, a .vrt or a folder of sheets")
    path = f"/vsimem/modalseg-sheets/{hashlib.sha256(folder.encode()).hexdigest()[:16]}.vrt"
    try:
        vrt = gdal.BuildVRT(path, files)
    except RuntimeError as exc:  # GDAL raises when its exceptions are on
        raise EngineError(f"the sheets of '{folder}' cannot be read as one raster: {' '.join(str(exc).split())[:300]}"
                          ) from None
    count = 0 if vrt is None else len(vrt.GetFileList() or [])  # the sheets it kept (others are skipped)
    vrt = None  # flushed into the memory file
    if count != len(files):
        gdal.Unlink(path)
        raise EngineError(f"the sheets of '{folder}' cannot be read as one raster: {len(files) - max(count, 0)} of "
                          f"{len(files)} differ from the first in CRS, band count or data type")
    _MOSAICS[folder] = path
    return path
