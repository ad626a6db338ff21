"""Reference package: a tiny, fast two-input network for the engine's tests and benchmarks.

``python -m modalseg.models.reference --out tests/fixtures/models/reference`` trains it for a few
CPU minutes on the real LiDAR HD samples (houses and fields: optical + nDSM; elevation tiles:
nDSM only, optical absent) and exports a package. It is independent of the network library so
the engine can be tested before (and regardless of) the big networks.

Network: per modality a stride-4 patch embedding and a dilated conv; a 1x1 gate per modality
whose logits, masked by the presence vector, are soft-maxed over modalities per pixel: these
weights fuse the features *and* are the robustness maps (so they sum to 1 over present
modalities); a dilated context conv and a 1x1 head at 1/4 resolution, x4 bilinear upsampling,
plus a per-pixel linear term of the inputs for sharp edges. About 20 k parameters, a few ms
per 256 x 256 tile on one CPU thread.
"""
from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .data.shared_data import SHARED_DATA

MODALITIES = {"optical": 3, "ndsm": 1}
SOURCES = {"optical": "rgb", "ndsm": "ndsm"}


def build_reference_net(config: Optional[Dict] = None):
    """Build the reference network (``config``: width, num_classes, modalities)."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    from .networks._base import SegNetwork

    cfg = {"width": 24, "num_classes": 6, "modalities": dict(MODALITIES)}
    cfg.update(config or {})

    class ReferenceNet(SegNetwork):
        has_robustness = True
        size_multiple = 8
        encoder_modules = ("enc",)

        def __init__(self) -> None:
            super().__init__(cfg)
            w = self.config["width"]
            # 4x4 stride-4 patch embedding: all the heavy work runs at 1/16 of the pixels
            self.enc = nn.ModuleDict({m: nn.Sequential(
                nn.Conv2d(c, w, 4, 4), nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, 1, 2, dilation=2), nn.ReLU(inplace=True))
                for m, c in self.in_channels.items()})
            self.gate = nn.ModuleDict({m: nn.Conv2d(w, 1, 1) for m in self.modalities})
            self.ctx = nn.Sequential(nn.Conv2d(w, w, 3, 1, 4, dilation=4), nn.ReLU(inplace=True))
            self.head = nn.Conv2d(2 * w, self.num_classes, 1)
            # per-pixel linear term from the raw inputs: sharp class edges at full resolution
            self.pixel = nn.ModuleDict({m: nn.Conv2d(c, self.num_classes, 1) for m, c in self.in_channels.items()})

        def forward(self, inputs: Dict[str, "torch.Tensor"], present: "torch.Tensor") -> Dict[str, "torch.Tensor"]:
            feats = [self.enc[m](inputs[m]) for m in self.modalities]
            gates = torch.cat([self.gate[m](f) for m, f in zip(self.modalities, feats)], 1)  # B,K,h,w
            p = present[:, :, None, None]
            # absent modalities get -1e4: exp underflows to exactly 0, so they weigh nothing
            weights = torch.softmax(gates + (p - 1.0) * 1e4, dim=1)
            fused = sum(weights[:, i:i + 1] * feats[i] for i in range(len(feats)))
            coarse = self.head(torch.cat([fused, self.ctx(fused)], 1))
            size = inputs[self.modalities[0]].shape[-2:]
            logits = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
            logits = logits + sum(self.pixel[m](inputs[m]) * p[:, i:i + 1]
                                  for i, m in enumerate(self.modalities))
            rob = F.interpolate(weights, size=size, mode="bilinear", align_corners=False)
            return {"logits": logits, "robustness": rob}

    return ReferenceNet()


def _areas(root: Path, val_fraction: float = 0.2):
    """Training / validation areas: the right 20 % of every tile is kept for validation."""
    from .data.chips import split_area
    from .data.rasters import find_lidar_stacks

    train, val, groups = [], [], []
    for folder, group in (("lidarhd_houses", "rgb"), ("lidarhd_fields", "rgb"), ("lidarhd_elevation", "elev")):
        for stack in find_lidar_stacks(root / folder, ("rgb", "ndsm")):
            a, b = split_area(stack, val_fraction, "right")
            train.append(a)
            val.append(b)
            groups.append(group)
    return train, val, groups


def _metadata(metrics: Dict, train_desc: str) -> Dict:
    from .export import NDSM_NORM, OPTICAL_NORM, base_metadata

    mods = [
        {"name": "optical", "kind": "optical", "bands": 3, "band_names": ["red", "green", "blue"],
         "normalization": OPTICAL_NORM, "required": False, "resampling": "bilinear",
         "description": "RGB orthophoto, 8-bit"},
        {"name": "ndsm", "kind": "ndsm", "bands": 1, "band_names": ["height above ground (m)"],
         "normalization": NDSM_NORM, "required": False, "resampling": "bilinear",
         "description": "normalised DSM in metres (DSM - DTM)"},
    ]
    return base_metadata(
        "modalseg-reference", mods, version="0.1.0", architecture="reference-gated-fcn",
        description="Tiny gated two-modality FCN for engine tests and overhead benchmarks; "
                    "a sensible but coarse urban map, not the production model.",
        training_data=train_desc, tile_size=256, size_multiple=8, overlap=32,
        gsd={"native": 0.5, "min": 0.25, "max": 2.0}, metrics=metrics,
        extra={"builder": "models.reference:build_reference_net"})


def train_reference(out: Path, minutes: float = 4.0, seed: int = 0, chip: int = 128, batch: int = 8,
                    log=None) -> Path:
    import torch

    from .data.chips import IGNORE, ChipSampler
    from .export import NDSM_NORM, OPTICAL_NORM, export_package
    from .networks._base import TrainingBatch
    from .nn.losses import LossSettings
    from ..engine.metrics import confusion_matrix, summarize

    log = log or functools.partial(print, flush=True)  # flushed: progress visible in nohup logs
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train, val, groups = _areas(SHARED_DATA)
    # equal weight per data group (rgb tiles vs elevation tiles), by area within a group
    w = np.array([a.pixels for a in train], float)
    for g in set(groups):
        idx = [i for i, x in enumerate(groups) if x == g]
        w[idx] = w[idx] / w[idx].sum()
    norms = {"optical": OPTICAL_NORM, "ndsm": NDSM_NORM}
    values = [1, 2, 3, 4, 5, 6]
    sampler = ChipSampler(train, list(MODALITIES), MODALITIES, SOURCES, norms, values, chip=chip,
                          gsd_range=(0.5, 1.5), drop_prob=0.3, area_weights=w)
    net = build_reference_net()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    # rarer classes weigh more (building, low vegetation are few pixels in these tiles)
    settings = LossSettings(class_weights=torch.tensor([1.0, 2.0, 2.0, 1.5, 1.0, 1.0]))
    t0, step = time.time(), 0
    while time.time() - t0 < minutes * 60:
        for g in opt.param_groups:  # linear decay over the time budget
            g["lr"] = 3e-3 * max(0.05, 1.0 - (time.time() - t0) / (minutes * 60))
        b = sampler.batch(batch, rng)
        net.train()
        loss, _ = net.training_loss(TrainingBatch({m: torch.from_numpy(b[m]) for m in MODALITIES},
                                                  torch.from_numpy(b["present"]),
                                                  torch.from_numpy(b["label"]).long()), settings)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 25 == 0:
            log(f"step {step} loss {loss.item():.3f} ({time.time() - t0:.0f} s)")
    train_s = time.time() - t0

    # validation: every held-out strip, whole, with the modalities it has
    from ..engine.normalize import normalize
    from .data.chips import as_normalization
    net.eval()
    cms: Dict[str, np.ndarray] = {}
    lut = np.full(256, IGNORE, np.int64)
    for i, v in enumerate(values):
        lut[v] = i
    for area in val:
        x0, y0, x1, y1 = area.window
        ww, hh = (x1 - x0) // 8 * 8, (y1 - y0) // 8 * 8
        label = lut[area.stack.read_label(x0, y0, ww, hh)]
        feed, present = {}, []
        for m, c in MODALITIES.items():
            if SOURCES[m] in area.stack.files:
                d, ok = area.stack.read(SOURCES[m], x0, y0, ww, hh)
                feed[m] = normalize(d, ok, as_normalization(norms[m], c))[None]
                present.append(1.0)
            else:
                feed[m] = np.zeros((1, c, hh, ww), np.float32)
                present.append(0.0)
        with torch.no_grad():
            pred = net({m: torch.from_numpy(a) for m, a in feed.items()},
                       torch.tensor([present]))["logits"].argmax(1)[0].numpy()
        subset = "+".join(m for m, p in zip(MODALITIES, present) if p) or "none"
        cm = confusion_matrix(label, pred, len(values), ignore_index=IGNORE)
        cms[subset] = cms.get(subset, 0) + cm
    metrics = {"protocol": "right 20 % of every LiDAR HD tile held out (spatially separate), "
                           "whole strip at native GSD; mIoU over classes present in the reference",
               "train_seconds": round(train_s, 1), "steps": step}
    names = [c for c in ("ground", "building", "low_vegetation", "tree", "water", "other")]
    for subset, cm in cms.items():
        s = summarize(cm, names, foreground=[0, 1, 2, 3])
        metrics[subset] = {"miou_ground_building_lowveg_tree": round(s["miou"], 4),
                           "oa": round(s["oa"], 4),
                           "iou": {k: (None if v != v else round(v, 4)) for k, v in s["iou"].items()}}
        log(f"val {subset}: mIoU(4) {s['miou']:.3f} OA {s['oa']:.3f} IoU {metrics[subset]['iou']}")
    desc = ("IGN LiDAR HD samples of shared/data: lidarhd_houses and lidarhd_fields (RGB + nDSM), "
            "lidarhd_elevation (nDSM only); right 20 % of each tile held out")
    meta = _metadata(metrics, desc)
    return export_package(net, meta, out, architecture="reference-gated-fcn", config=net.config,
                          file_name="reference")


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/fixtures/models/reference")
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    path = train_reference(Path(a.out), a.minutes, a.seed)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
