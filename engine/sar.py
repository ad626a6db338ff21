"""SAR values as users store them, brought to what SAR packages are trained on: backscatter in dB.

Sentinel-1 and other SAR products reach GIS users as dB floats (often NaN outside the swath), as
linear power (sigma0 / intensity, every value >= 0 with a long tail), or as complex samples (SLC:
CInt16 / CFloat32). The binding decides which (or the analyst declares it); the reader then reads
the file through :func:`sar_view`, a GDAL VRT whose pixel functions turn complex samples into
intensity |z|^2 and linear power into 10 log10, *before* any warping: resampling then averages
dB values, as it does for a file stored in dB, so both give the same map.
"""
from __future__ import annotations

import re
from typing import Tuple
from xml.sax.saxutils import escape

import numpy as np
from osgeo import gdal

from .grid import open_raster

# Linear power is a long-tailed distribution (speckle, bright scatterers): its 99th percentile is
# many times its median. dB values and 8-bit display scalings of dB sit in a narrow band, their
# 99th percentile within a few times the median (or they go below zero, which power never does).
LONG_TAIL_RATIO = 5.0
_BAND_BLOCK = re.compile(r"<VRTRasterBand .*?</VRTRasterBand>", re.S)


def is_complex(path: str) -> bool:
    """Whether any band of the raster holds complex samples (CInt16, CFloat32, ...)."""
    ds = open_raster(path)
    return any(gdal.DataTypeIsComplex(ds.GetRasterBand(b).DataType) for b in range(1, ds.RasterCount + 1))


def sar_view(path: str, to_db: bool) -> gdal.Dataset:
    """The raster as float32 bands (same numbers, same grid): complex samples as intensity |z|^2,
    and with ``to_db`` everything in dB (10 log10 of power, 20 log10 of a complex sample's modulus).
    GDAL band scale / offset are applied inside; nodata becomes NaN; power <= 0 has no dB value and
    becomes -inf or NaN, which the readers take as invalid."""
    ds = open_raster(path)
    bands = []
    for number in range(1, ds.RasterCount + 1):
        band = ds.GetRasterBand(number)
        complex_samples = bool(gdal.DataTypeIsComplex(band.DataType))
        if to_db:
            function = f'<PixelFunctionType>dB</PixelFunctionType><PixelFunctionArguments fact="{20 if complex_samples else 10}"/>'
        elif complex_samples:
            function = "<PixelFunctionType>intensity</PixelFunctionType>"
        else:
            function = "<PixelFunctionType>real</PixelFunctionType>"
        nodata = band.GetNoDataValue()
        scale, offset = band.GetScale() or 1.0, band.GetOffset() or 0.0
        # NaN is declared nodata only where the source declares nodata: warps then skip invalid
        # pixels exactly as they do for the source itself (a float file with undeclared NaN lets a
        # NaN reach its neighbours), so dB and the same layer in power give the same valid pixels
        bands.append(
            f'<VRTRasterBand dataType="Float32" band="{number}" subClass="VRTDerivedRasterBand">'
            + ("<NoDataValue>nan</NoDataValue>" if nodata is not None else "") + function +
            f"<SourceTransferType>{'CFloat32' if complex_samples else 'Float32'}</SourceTransferType>"
            f'<ComplexSource><SourceFilename relativeToVRT="0">{escape(path)}</SourceFilename>'
            f"<SourceBand>{number}</SourceBand>"
            + (f"<NODATA>{nodata!r}</NODATA>" if nodata is not None else "")
            + (f"<ScaleOffset>{offset!r}</ScaleOffset><ScaleRatio>{scale!r}</ScaleRatio>"
               if (scale, offset) != (1.0, 0.0) else "")
            + "</ComplexSource></VRTRasterBand>")
    xml = gdal.Translate("", ds, format="VRT").GetMetadata("xml:VRT")[0]
    blocks = iter(bands)
    return gdal.Open(_BAND_BLOCK.sub(lambda _: next(blocks), xml))


def scale_of(values: np.ndarray) -> Tuple[str, str]:
    """``("linear" | "db", why)`` from a layer's valid values (a decimated sample of all of it)."""
    if values.size == 0:  # the run says so, naming the layer
        return "db", "it holds no valid value to tell otherwise"
    low = float(values.min())
    if low < 0:
        return "db", f"it holds negative values (down to {low:.3g}), which power never takes"
    positive = values[values > 0]  # exact zeros are fill outside the swath more often than power
    if positive.size == 0:
        return "db", "all its values are 0"
    median, p99 = (float(v) for v in np.percentile(positive, [50.0, 99.0]))
    if p99 / median >= LONG_TAIL_RATIO:
        return "linear", (f"every value is >= 0 with a long tail (99th percentile {p99:.3g} = "
                          f"{p99 / median:.1f} x the median {median:.3g}), as linear power has")
    return "db", (f"its values are >= 0 without a long tail (99th percentile {p99:.3g}, median {median:.3g}), "
                  "as dB or a display scaling of dB")
