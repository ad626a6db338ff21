"""Labelled stacks made from a LiDAR point cloud and the orthophoto of the same place: the cloud's
labels, DSM and nDSM rasterised onto the orthophoto's grid with ``engine.point_cloud`` (the code
behind ``modalseg:rasterize_point_cloud``), so a real orthophoto without label rasters trains and
validates like a LiDAR HD tile. The rasters are cached under a key naming everything they depend
on (files, their sizes, class scheme, gap distance): a changed input makes new ones."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

from ...engine.errors import EngineError
from ...engine.package import ClassInfo
from .rasters import RasterStack

# Label cells farther than this from any LiDAR point stay unlabelled: 1 m at BD ORTHO's 0.2 m, about
# twice the cloud's point spacing (at 2 px a quarter of the cells between points is lost).
NODATA_DISTANCE_PX = 5.0


def rasterised_stack(ortho: Path, cloud: Path, classes: Sequence[ClassInfo], cache: Path,
                     modality: str = "rgb", log: Callable[[str], None] = lambda text: None) -> RasterStack:
    """Stack ``{modality: ortho, "ndsm", "dsm"}`` with labels, all on ``ortho``'s grid."""
    from ...engine.point_cloud import RasterizeOptions, RasterOutputs, rasterize_point_cloud

    for path in (ortho, cloud):
        if not path.exists():
            raise EngineError(f"'{path}' does not exist")
    stamp = json.dumps([str(cloud), cloud.stat().st_size, str(ortho), ortho.stat().st_size, NODATA_DISTANCE_PX,
                        [(c.value, c.name) for c in classes]])
    work = Path(cache) / hashlib.sha256(stamp.encode()).hexdigest()[:12]
    layers = {kind: work / f"{kind}.tif" for kind in ("labels", "ndsm", "dsm")}
    if not all(path.exists() for path in layers.values()):
        work.mkdir(parents=True, exist_ok=True)
        rasterize_point_cloud([str(cloud)], RasterOutputs(**{k: str(v) for k, v in layers.items()}), classes,
                              RasterizeOptions(reference=str(ortho), nodata_distance=NODATA_DISTANCE_PX),
                              log=lambda text: None)
        log(f"labels, DSM and nDSM of '{ortho.name}' rasterised from '{cloud.name}' ({work})")
    return RasterStack(ortho.stem, {modality: ortho, "ndsm": layers["ndsm"], "dsm": layers["dsm"]},
                       layers["labels"], region=ortho.parent.name)
