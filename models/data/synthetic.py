"""Procedural synthetic scenes for tests and pre-training, consistent across modalities.

One label map drives everything: a building is tall in the DSM, roof-coloured in RGB, dark in
NIR and bright (double bounce at its walls) in SAR; vegetation is bright in NIR; water is flat,
dark in NIR and dark in SAR. Labels follow the LiDAR HD scheme of shared/data (1 ground /
impervious, 2 building, 3 low vegetation, 4 tree, 5 water, 6 other; cars are "other").
Seeded and fast (a 256 x 256 scene in a few tens of ms).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import numpy as np
from scipy import ndimage

from ...engine.gdal_mode import gdal_exceptions

GROUND, BUILDING, LOW_VEG, TREE, WATER, OTHER = 1, 2, 3, 4, 5, 6


def _noise(rng: np.random.Generator, shape: Tuple[int, int], sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.normal(size=shape), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-9)


def synthetic_scene(size: int = 256, seed: int = 0, gsd: float = 0.5) -> Dict[str, np.ndarray]:
    """Arrays: ``rgb`` (3 x H x W uint8), ``nir`` (1 x H x W uint8), ``dsm``/``dtm``/``ndsm``
    (1 x H x W float32, metres), ``sar`` (1 x H x W float32, dB) and ``label`` (H x W uint8)."""
    rng = np.random.default_rng(seed)
    h = w = size
    px = 1.0 / gsd  # pixels per metre: object sizes are in metres
    label = np.full((h, w), GROUND, np.uint8)
    ndsm = np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]

    label[_noise(rng, (h, w), 12 * px) > 0.3] = LOW_VEG
    if rng.random() < 0.6:  # a pond or river stretch
        label[_noise(rng, (h, w), 20 * px) > 1.3] = WATER
    road = np.zeros((h, w), bool)
    for _ in range(rng.integers(1, 3)):  # straight roads, 6-10 m wide
        half = rng.uniform(3, 5) * px
        if rng.random() < 0.5:
            c = rng.uniform(0, h)
            road |= np.abs(yy - c) < half
        else:
            c = rng.uniform(0, w)
            road |= np.abs(xx - c) < half
    label[road] = GROUND
    free = ~road & (label != WATER)

    for _ in range(int(rng.integers(8, 20) * (size / 256) ** 2 * 2 * gsd)):  # buildings
        bh, bw = rng.uniform(8, 25, 2) * px
        y0, x0 = rng.uniform(0, h - bh), rng.uniform(0, w - bw)
        box = (yy >= y0) & (yy < y0 + bh) & (xx >= x0) & (xx < x0 + bw)
        if not free[box].all():
            continue
        height = rng.uniform(3, 15)
        if rng.random() < 0.5:  # gable roof along the long side
            t = ((yy - y0) / bh) if bh < bw else ((xx - x0) / bw)
            roof = height + rng.uniform(1, 4) * (1 - np.abs(2 * t - 1))
        else:
            roof = np.full((h, w), height)
        label[box] = BUILDING
        ndsm[box] = roof[box]
        free &= ~ndimage.binary_dilation(box, iterations=max(1, int(2 * px)))
    for _ in range(int(rng.integers(10, 40) * (size / 256) ** 2 * 2 * gsd)):  # trees: domes
        r = rng.uniform(2, 6) * px
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        d2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / r ** 2
        crown = (d2 < 1) & free
        top = rng.uniform(5, 18)
        label[crown] = TREE
        ndsm[crown] = np.maximum(ndsm[crown], top * np.sqrt(1 - d2[crown]) * 0.4 + top * 0.6)
    for _ in range(int(rng.integers(0, 12) * (size / 256) ** 2 * 2 * gsd)):  # cars on roads
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        car = (np.abs(yy - cy) < 1.0 * px) & (np.abs(xx - cx) < 2.2 * px) & road
        label[car] = OTHER
        ndsm[car] = 1.5
    ndsm[label == LOW_VEG] += np.abs(_noise(rng, (h, w), 1.0)[label == LOW_VEG]) * 0.25
    ndsm += np.where(label == TREE, 0.7 * np.abs(rng.normal(size=(h, w))), 0.0).astype(np.float32)

    dtm = (100 + 3.0 * _noise(rng, (h, w), 60 * px) + 0.02 * gsd * (xx + 0.5 * yy)).astype(np.float32)
    dtm[label == WATER] = dtm[label == WATER].min() if (label == WATER).any() else 0
    dsm = dtm + ndsm

    # optical: class colour + texture; roofs vary per building (red tiles or grey)
    base = {GROUND: (120, 118, 112), BUILDING: (150, 80, 60), LOW_VEG: (105, 140, 70), TREE: (50, 85, 45),
            WATER: (40, 60, 85), OTHER: (200, 200, 210)}
    nir_base = {GROUND: 90, BUILDING: 70, LOW_VEG: 190, TREE: 170, WATER: 15, OTHER: 100}
    rgb = np.zeros((3, h, w), np.float32)
    nir = np.zeros((h, w), np.float32)
    for cls, col in base.items():
        m = label == cls
        rgb[:, m] = np.asarray(col, np.float32)[:, None]
        nir[m] = nir_base[cls]
    lab_b, n_b = ndimage.label(label == BUILDING)
    grey = rng.random(n_b + 1) < 0.4
    rgb[:, grey[lab_b] & (lab_b > 0)] = 125.0
    rgb[:, road] -= 35.0
    tex = _noise(rng, (h, w), 1.0) * 10 + _noise(rng, (h, w), 6 * px) * 12
    rgb += tex[None] * rng.uniform(0.9, 1.1, size=(3, 1, 1))
    nir += tex
    # SAR: dB per class, double bounce on building walls, multiplicative speckle (4 looks)
    sar_db = {GROUND: -14.0, BUILDING: -4.0, LOW_VEG: -10.0, TREE: -7.0, WATER: -23.0, OTHER: -2.0}
    sar = np.zeros((h, w), np.float32)
    for cls, db in sar_db.items():
        sar[label == cls] = db
    walls = ndimage.binary_dilation(label == BUILDING) & (label != BUILDING)
    sar[walls] = 5.0
    speckle = rng.gamma(4.0, 1.0 / 4.0, size=(h, w))
    sar = (sar + 10 * np.log10(speckle)).astype(np.float32)
    return {
        "rgb": np.clip(rgb, 0, 255).astype(np.uint8),
        "nir": np.clip(nir, 0, 255).astype(np.uint8)[None],
        "dsm": dsm[None].astype(np.float32), "dtm": dtm[None].astype(np.float32),
        "ndsm": ndsm[None].astype(np.float32), "sar": sar[None], "label": label,
    }


@gdal_exceptions()
def write_scene(folder: "str | Path", scene: Dict[str, np.ndarray], stem: str = "synth",
                gsd: float = 0.5, origin: Tuple[float, float] = (500000.0, 6600000.0),
                epsg: int = 2154) -> Dict[str, Path]:
    """Write a scene as aligned GeoTIFFs ``<stem>_<layer>.tif`` (LiDAR HD naming)."""
    from osgeo import gdal, osr

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    paths = {}
    for key, arr in scene.items():
        a = arr[None] if arr.ndim == 2 else arr
        dtype = gdal.GDT_Byte if a.dtype == np.uint8 else gdal.GDT_Float32
        path = folder / f"{stem}_{key}.tif"
        ds = gdal.GetDriverByName("GTiff").Create(str(path), a.shape[2], a.shape[1], a.shape[0], dtype)
        ds.SetGeoTransform((origin[0], gsd, 0.0, origin[1], 0.0, -gsd))
        ds.SetProjection(srs.ExportToWkt())
        for b in range(a.shape[0]):
            band = ds.GetRasterBand(b + 1)
            band.WriteArray(a[b])
            band.SetNoDataValue(0 if a.dtype == np.uint8 else -9999.0)
        ds = None
        paths[key] = path
    return paths
