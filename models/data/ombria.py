"""OMBRIA Sentinel-1 / Sentinel-2 flood chips (``shared/data/ombria_s1s2``) as training stacks.

Each chip is a folder-spread set of 256 x 256 PNGs with one file name: ``s1_after`` / ``s1_before``
(SAR backscatter, display-scaled uint8), ``s2_after`` (true colour, display-scaled uint8) and
``mask`` (255 = water after the event). The PNGs carry no georeferencing, so a chip's pixel size is
set to the dataset's ~10 m; its mask is read as the package's class values (1 land, 5 water).
Validation for checkpoint selection is a seeded share of ``train/`` chips; ``test/`` is never
trained or selected on (it gives the held-out figures).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .chips import Area
from .rasters import RasterStack

OMBRIA_GSD = 10.0  # metres: Sentinel-1 GRD and Sentinel-2 10 m bands, as the dataset states
LAND, WATER = 1, 5  # class values of the flood package (water = 5 as in the urban packages)
LAYERS = ("s1_after", "s1_before", "s2_after")  # the stack keys a recipe's modalities may name
MASK_FOLDER = "mask"
_WATER_CODE = 255


@dataclass
class OmbriaChip(RasterStack):
    """One OMBRIA chip: its layers by folder name and its water mask read as class values."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.gsd = OMBRIA_GSD  # the PNG's own pixel size is a placeholder 1

    def read_label(self, x: int = 0, y: int = 0, w: Optional[int] = None,
                   h: Optional[int] = None) -> np.ndarray:
        mask = super().read_label(x, y, w, h)
        return np.where(mask == _WATER_CODE, WATER, LAND).astype(np.uint8)


def find_ombria_chips(split_folder: "str | Path", layers: Sequence[str] = LAYERS) -> List[OmbriaChip]:
    """Every chip of one split folder (``.../ombria_s1s2/train`` or ``test``) that has a mask and
    all the wanted layers, in file-name order."""
    root = Path(split_folder)
    unknown = sorted(set(layers) - set(LAYERS))
    if unknown:
        raise ValueError(f"OMBRIA has no layer {unknown}; it has {', '.join(LAYERS)}")
    chips = []
    for mask in sorted((root / MASK_FOLDER).glob("*.png")):
        files = {key: root / key / mask.name for key in layers}
        if all(p.exists() for p in files.values()):
            chips.append(OmbriaChip(f"{root.name}/{mask.stem}", files, mask, region="ombria_s1s2"))
    return chips


def validation_split(chips: Sequence[OmbriaChip], fraction: float, seed: int
                     ) -> Tuple[List[Area], List[Area]]:
    """Whole chips as areas: a seeded ``fraction`` of them for validation, the rest for training."""
    order = np.random.default_rng(seed).permutation(len(chips))
    n_val = int(round(len(chips) * fraction))
    val_ids = set(order[:n_val].tolist())
    whole = [Area(c, (0, 0, c.width, c.height)) for c in chips]
    train = [a for i, a in enumerate(whole) if i not in val_ids]
    val = [a for i, a in enumerate(whole) if i in val_ids]
    return train, val
