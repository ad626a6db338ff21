"""The distinct values of a label raster, for the fine-tune dialog's label -> class table.

GDAL's exact histogram with one bucket per integer value: GDAL reads the band block by block
(memory stays bounded by a block, whatever the raster's size) and leaves nodata out.
"""
import math
from typing import List

MAX_LABEL_RANGE = 65536  # buckets of the histogram; label codes beyond this span are not class codes


class LabelRasterError(ValueError):
    """The raster cannot give label values; the message names the file and the cause."""


def raster_label_values(path: str, band: int = 1) -> List[int]:
    """Integer values present in ``band`` of the raster at ``path`` (nodata excluded), ascending."""
    from osgeo import gdal

    try:
        dataset = gdal.Open(str(path))
    except RuntimeError as exc:  # GDAL raises or returns None, depending on its exception mode
        raise LabelRasterError(f"cannot read label values from {path}: {exc}") from None
    if dataset is None:
        raise LabelRasterError(f"cannot read label values from {path}: GDAL cannot open it.")
    if not 1 <= band <= dataset.RasterCount:
        raise LabelRasterError(f"{path} has no band {band} (it has {dataset.RasterCount}).")
    raster_band = dataset.GetRasterBand(band)
    try:
        low, high = raster_band.ComputeRasterMinMax(False)
    except (RuntimeError, TypeError):
        return []  # nodata everywhere: no label value
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    first, last = int(round(low)), int(round(high))
    if last - first + 1 > MAX_LABEL_RANGE:
        raise LabelRasterError(f"{path} holds values from {low:g} to {high:g}: that is not a raster of "
                               f"class codes (at most {MAX_LABEL_RANGE} distinct integers).")
    counts = raster_band.GetHistogram(first - 0.5, last + 0.5, last - first + 1, include_out_of_range=False,
                                      approx_ok=False)
    raster_band = dataset = None
    return [first + offset for offset, count in enumerate(counts) if count > 0]
