"""Shared benchmark fixtures: a generated multi-modal scene and a U-Net-sized ONNX package.

The scene: optical uint16 (3 bands, EPSG:32631, 0.5 m) and a DSM float32 in another CRS
(EPSG:3857) at another pixel size (0.7 m), so every benchmark pays for real alignment.
The model: an early-fusion U-Net of about 4.4 M parameters (the size Deepness was measured with),
random but seeded weights, exported with the ModalSeg metadata. Both are cached under ``--work``.
"""
from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
from osgeo import gdal

if __package__ in (None, ""):  # imported as a top-level module by accuracy.py / few_labels.py run as files
    from plugin_path import REPO_ROOT, expose_plugin_package  # type: ignore
else:
    from .plugin_path import REPO_ROOT, expose_plugin_package

gdal.UseExceptions()
ORIGIN = (500000.0, 6000000.0)
PIXEL = 0.5


def shared_data_folder() -> Path:
    """The shared sample data folder (``models.data.shared_data``: ``../shared/data`` or
    ``$MODALSEG_SHARED_DATA``), whether or not it exists."""
    expose_plugin_package()
    from modalseg.models.data.shared_data import SHARED_DATA

    return SHARED_DATA


class OnnxPredictor:
    """Runs a package's ONNX graph (through the engine's runner, CPU) on one whole in-memory area:
    inputs padded to the graph's size multiple, outputs cropped back."""

    def __init__(self, package, threads: int) -> None:
        from modalseg.engine.runtime import make_runner

        self.package = package
        self.runner = make_runner(package, "onnx", "cpu", threads)
        self.mult = package.metadata.size_multiple

    def outputs(self, feed: Dict[str, np.ndarray], present) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Logits (classes x h x w) and robustness (modalities x h x w, or None) of normalised
        inputs (modality -> bands x h x w; every modality of the package) with presence ``present``."""
        meta = self.package.metadata
        h, w = next(iter(feed.values())).shape[-2:]
        ph, pw = -h % self.mult, -w % self.mult
        feeds = {m: np.pad(feed[m], ((0, 0), (0, ph), (0, pw)))[None] for m in meta.modality_names}
        if meta.presence_input:
            feeds[meta.presence_input] = np.asarray([present], np.float32)
        logits, rob = self.runner.run(feeds)
        return logits[0, :, :h, :w], None if rob is None else rob[0, :, :h, :w]

    def __call__(self, feed: Dict[str, np.ndarray], present) -> np.ndarray:
        return self.outputs(feed, present)[0].argmax(0)


def peak_rss_mb() -> float:
    """This process's peak RSS since it started its program: VmHWM (Linux) resets at exec, while
    ru_maxrss keeps the peak of the process it was forked from (a benchmark's child measuring one run
    reported the benchmark's own peak, so every size looked the same)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# CPU flags of the instructions int8 convolutions gain from (x86 VNNI and AMX, ARM dot product)
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")


def cpu_description() -> str:
    """'<model name>, <cores> cores, int8 instructions: ...' from /proc/cpuinfo (Linux; elsewhere the
    platform's processor name): int8 speed-ups depend on them, so figures carry the machine."""
    import platform

    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags.update(value.split())
    except OSError:
        pass
    found = [flag for flag in INT8_FLAGS if flag in flags]
    widest = next((label for flag, label in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("asimd", "NEON"))
                   if flag in flags), "unknown")
    return (f"{name}, {os.cpu_count()} cores, widest SIMD {widest}, int8 dot-product instructions: "
            f"{', '.join(found) or 'none'}")


def _pattern(rows: np.ndarray, cols: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((rows.size, cols.size), np.float32)
    for _ in range(4):
        fy, fx = rng.uniform(0.002, 0.03, 2)
        out += np.sin(rows[:, None] * fy + rng.uniform(0, 6))[:, :] * np.cos(cols[None, :] * fx + rng.uniform(0, 6))
    return out


def make_scene(folder: Path, size: int) -> Dict[str, str]:
    """Optical + DSM of ``size`` x ``size`` optical pixels, written in strips (bounded memory)."""
    folder.mkdir(parents=True, exist_ok=True)
    optical = folder / f"optical_{size}.tif"
    dsm = folder / f"dsm_{size}_3857.tif"
    if optical.exists() and dsm.exists():
        return {"optical": str(optical), "dsm": str(dsm)}
    gt = (ORIGIN[0], PIXEL, 0.0, ORIGIN[1], 0.0, -PIXEL)
    options = ["TILED=YES", "COMPRESS=DEFLATE"]
    opt = gdal.GetDriverByName("GTiff").Create(str(optical), size, size, 3, gdal.GDT_UInt16, options)
    local_dsm = folder / f".dsm_{size}_local.tif"
    dem = gdal.GetDriverByName("GTiff").Create(str(local_dsm), size, size, 1, gdal.GDT_Float32, options)
    for ds in (opt, dem):
        ds.SetGeoTransform(gt)
        ds.SetProjection("EPSG:32631")
    cols = np.arange(size)
    for y in range(0, size, 512):
        rows = np.arange(y, min(y + 512, size))
        for band in range(3):
            values = (_pattern(rows, cols, band) + 4) * 4000
            opt.GetRasterBand(band + 1).WriteArray(values.astype(np.uint16), 0, y)
        dem.GetRasterBand(1).WriteArray(100 + 10 * _pattern(rows, cols, 7), 0, y)
    opt = dem = ds = None  # closing flushes the files
    gdal.Warp(str(dsm), str(local_dsm), dstSRS="EPSG:3857", xRes=0.7, yRes=0.7, resampleAlg="bilinear",
              creationOptions=options)
    local_dsm.unlink()
    return {"optical": str(optical), "dsm": str(dsm)}


def make_unet_package(folder: Path, tile_size: int = 1024, overlap: int = 64) -> Path:
    """A 4.4 M-parameter multi-input U-Net package (random seeded weights), built once."""
    onnx_path = folder / "bench-unet" / "bench-unet.onnx"
    if onnx_path.exists():
        return onnx_path
    import onnx
    import torch
    from torch import nn

    torch.manual_seed(0)

    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                             nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    class UNet(nn.Module):
        def __init__(self, widths=(32, 64, 128, 256, 320), classes=6):
            super().__init__()
            self.down = nn.ModuleList()
            previous = 4
            for w in widths:
                self.down.append(block(previous, w))
                previous = w
            self.up = nn.ModuleList(block(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1))
            self.head = nn.Conv2d(widths[0], classes, 1)
            self.gate = nn.Conv2d(widths[0], 2, 1)

        def forward(self, optical, dsm, present):
            x = torch.cat([optical, dsm], 1)
            skips = []
            for i, layer in enumerate(self.down):
                x = layer(x if i == 0 else nn.functional.max_pool2d(x, 2))
                skips.append(x)
            for i in reversed(range(len(self.up))):
                x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
                x = self.up[i](torch.cat([x, skips[i]], 1))
            gate = self.gate(x) + (present[:, :, None, None] - 1) * 1e4
            return self.head(x), torch.softmax(gate, 1)

    net = UNet().eval()
    parameters = sum(p.numel() for p in net.parameters())
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    dummy = (torch.zeros(1, 3, 64, 64), torch.zeros(1, 1, 64, 64), torch.ones(1, 2))
    axes = {"optical": {0: "B", 2: "H", 3: "W"}, "dsm": {0: "B", 2: "H", 3: "W"}, "present": {0: "B"}}
    torch.onnx.export(net, dummy, str(onnx_path), input_names=["optical", "dsm", "present"],
                      output_names=["logits", "robustness"], dynamic_axes=axes, opset_version=17, dynamo=False)
    metadata = {
        "schema_version": 1, "name": "bench-unet", "version": "0", "architecture": "unet-early-fusion",
        "description": f"benchmark model, {parameters} parameters, random weights", "license": "CC0-1.0",
        "training_data": "none",
        "classes": [{"value": v, "name": f"class {v}", "color": "#808080"} for v in range(1, 7)],
        "modalities": [
            {"name": "optical", "kind": "optical", "bands": 3, "normalization":
                {"type": "meanstd", "mean": [16000] * 3, "std": [8000] * 3}},
            {"name": "dsm", "kind": "dsm", "bands": 1, "normalization": {"type": "meanstd", "mean": [100], "std": [10]}},
        ],
        "presence_input": "present", "has_robustness": True, "tile_size": tile_size, "size_multiple": 16,
        "overlap": overlap, "gsd": {"native": 0.5, "min": 0.25, "max": 2.0},
    }
    model = onnx.load(str(onnx_path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "modalseg", json.dumps(metadata)
    onnx.save(model, str(onnx_path))
    onnx_path.with_suffix(".json").write_text(json.dumps(metadata, indent=2))
    return onnx_path


def sources_for(scene: Dict[str, str], package) -> Tuple[list, list]:
    from modalseg.engine import LayerInput, bind_modalities
    return bind_modalities(package.metadata, {"optical": LayerInput(scene["optical"]),
                                              "elevation": LayerInput(scene["dsm"], elevation_type="dsm")})
