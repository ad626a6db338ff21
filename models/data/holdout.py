"""The honest validation set: whole tiles and areas that no recipe trains on or selects on.

Validation strips cut from training tiles neighbour training pixels and overstate what users
get on ground the model never saw (measured 10 points below the strip figures on towns outside
``shared/data``). So these whole tiles are kept out of every recipe's training *and* of its
checkpoint selection, and ``benchmarks/accuracy`` reports them first. They were chosen before
any training, as places unlike the rest: a 2 m tile of another town and year, an overseas island,
a bridge over a river, one tile of a 2 x 2 block (the other three train), and for optical the
BD ORTHO orthophoto of another region (labels rasterised from its LiDAR point cloud).
"""
from __future__ import annotations

from typing import Dict, Tuple

# folder of shared/data -> stems of its stacks (``<stem>_label.tif``) that are held out
HELD_OUT_STACKS: Dict[str, Tuple[str, ...]] = {
    "lidarhd_elevation": (
        "decim_test_semis_2021_0382_6565_LA93_IGN69",  # 2 m, another town and year than 0299/0300
        "stbarth_subset_100m",  # 0.5 m, Saint-Barthélemy (tropical island)
        "ignplugin_mnx_pont",  # 0.5 m, a bridge and river banks
        "test_data_77055_627760_LA93_IGN69",  # 0.5 m, one tile of a 2 x 2 block
    ),
}

# the held-out optical area: orthophoto (RGB; IRC beside it) + the LiDAR cloud that labels it
HELD_OUT_OPTICAL_AREA = {
    "folder": "point_clouds",
    "rgb": "bdortho_pacasam_792000_6272000_left_rgb_north.tif",
    "irc": "bdortho_pacasam_792000_6272000_left_irc_north.tif",
    "point_cloud": "lidarhd_pacasam_792000_6272000_left.laz",
}


def is_held_out(folder: str, stem: str) -> bool:
    """True when the stack ``stem`` of shared-data folder ``folder`` is in the held-out set."""
    return stem in HELD_OUT_STACKS.get(folder, ())


def is_held_out_optical(filename: str) -> bool:
    """True when ``filename`` is a layer of the held-out optical area."""
    return filename in (HELD_OUT_OPTICAL_AREA["rgb"], HELD_OUT_OPTICAL_AREA["irc"])
