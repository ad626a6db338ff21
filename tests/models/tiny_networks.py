"""The five seed networks at test size (tiny widths: CPU seconds per training step), with the
modalities each takes as package / recipe entries (synthetic scenes carry all of them)."""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from modalseg.engine.normalize import normalize
from modalseg.models.data.chips import as_normalization
from modalseg.models.data.synthetic import synthetic_scene
from modalseg.models.export import NDSM_NORM, OPTICAL_NORM

SAR_NORM = {"type": "meanstd", "mean": [-10.0], "std": [6.0]}
MODALITIES = {  # name -> package modality entry plus the synthetic scene's file suffix ("source")
    "optical": {"name": "optical", "kind": "optical", "bands": 3, "normalization": OPTICAL_NORM, "source": "rgb"},
    "ndsm": {"name": "ndsm", "kind": "ndsm", "bands": 1, "normalization": NDSM_NORM, "source": "ndsm"},
    "sar": {"name": "sar", "kind": "sar", "bands": 1, "normalization": SAR_NORM, "source": "sar"},
}
TINY: Dict[str, Dict[str, Any]] = {
    "sgma": {"modalities": ["optical", "ndsm"],
             "network": {"backbone_widths": [8, 16, 16, 32], "backbone_depths": [1, 1, 1, 1], "sp_heads": 2,
                         "rp_heads": 2, "head_dim": 16}},
    "emsnet": {"modalities": ["optical", "ndsm"],
               "network": {"widths": [8, 8, 16, 16, 24], "aux_blocks": 1, "out_channels": 8}},
    "ammnet": {"modalities": ["optical", "ndsm"],
               "network": {"widths": [8, 16, 16, 32], "depths": [1, 1, 1, 1], "aux_widths": [4, 8, 8, 16],
                           "decoder_channels": 16, "da_dim": 8}},
    "asanet": {"modalities": ["optical", "sar"],
               "network": {"widths": [8, 16, 16, 32], "depths": [1, 1, 1, 1], "decoder_channels": 16,
                           "aux_channels": 8}},
    "mobanet": {"modalities": ["optical", "ndsm"],
                "network": {"vit_dim": 32, "vit_depth": 4, "vit_heads": 2, "proj_dim": 16, "decoder_channels": 16,
                            "aux_channels": 8}},
}
ARCHITECTURES = tuple(TINY)


def modality_entries(architecture: str, with_source: bool = False) -> List[Dict[str, Any]]:
    """The architecture's modalities as package metadata entries (recipe entries with ``source``)."""
    keep = (lambda k: True) if with_source else (lambda k: k != "source")
    return [{k: v for k, v in MODALITIES[m].items() if keep(k)} for m in TINY[architecture]["modalities"]]


def network_config(architecture: str, num_classes: int = 6) -> Dict[str, Any]:
    """A ``build_network`` config for the tiny network."""
    spec = TINY[architecture]
    return {**spec["network"], "num_classes": num_classes,
            "modalities": {m: MODALITIES[m]["bands"] for m in spec["modalities"]}}


def synthetic_batch(architecture: str, n: int = 4, size: int = 64, seed: int = 0):
    """A ``TrainingBatch`` of ``n`` synthetic scenes, normalised as the architecture's packages
    are, every modality present; targets are class indices (scene value - 1)."""
    import torch

    from modalseg.models.networks._base import TrainingBatch

    scenes = [synthetic_scene(size, seed=seed + i) for i in range(n)]
    inputs = {}
    for name in TINY[architecture]["modalities"]:
        entry = MODALITIES[name]
        norm = as_normalization(entry["normalization"], entry["bands"])
        layers = [s[entry["source"]].astype(np.float32) for s in scenes]
        inputs[name] = torch.from_numpy(np.stack([normalize(a, np.ones(a.shape[1:], bool), norm) for a in layers]))
    target = torch.from_numpy(np.stack([s["label"].astype(np.int64) - 1 for s in scenes]))
    return TrainingBatch(inputs, torch.ones(n, len(inputs)), target)
