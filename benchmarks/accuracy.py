"""Accuracy of every bundled package on validation areas kept out of its training.

    python benchmarks/accuracy.py [--models resources/models] [--data ../shared/data]

First, the held-out figures (``models.held_out``): every package (and optical-only baseline) on
the held-out set of ``models/data/holdout.py`` — whole tiles and the BD ORTHO optical area, run
whole through ``segment`` at native GSD — per GSD group and modality subset, then pooled per
subset: per-class IoU and mIoU over ground / building / low vegetation / tree. Each package's
protocol line says whether it saw those tiles in training (the packages made before the set
was fixed did). Then, as a secondary table, the strip figures below.

Validation strips: the right 20 % strip of every LiDAR HD tile of ``shared/data`` (the bundled
packages were trained on the left 80 % only; each package's metadata states its protocol, which
is printed). Groups: ``towns`` (lidarhd_elevation: nDSM only, 0.5 m and 2 m) and ``rgb_tiles``
(lidarhd_houses + lidarhd_fields: RGB + nDSM, 0.5 m). Each strip is run whole, at native GSD,
through the package's ONNX graph with the engine's normalisation, for every non-empty subset of
the modalities it carries (SGMA table form: per-class IoU, mIoU over ground / building / low
vegetation / tree with >= 200 reference px in the group, Average / Top-1 / Last-1). Next to
the packages: a rule baseline (nDSM height + roughness, and greenness when optical is present; no
learning) and the default package's network trained on optical only (``benchmarks/baselines``,
recipe ``training/sgma_optical_only.json``), with a fusion check per package. Also printed: mean
robustness per class and modality, and building IoU on the whole houses tile (partly seen in
training: only its right strip is unseen). Last, the flood table (``benchmarks/flood.py``: the
SAR packages on OMBRIA test/), which the urban tables leave out. Figures, not assertions.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import OnnxPredictor, expose_plugin_package, shared_data_folder  # type: ignore
else:
    from .common import OnnxPredictor, expose_plugin_package, shared_data_folder
expose_plugin_package()

from modalseg.engine.metrics import confusion_from_values, per_class  # noqa: E402
from modalseg.engine.package import list_packages, load_package  # noqa: E402
from modalseg.models.held_out import HeldOutArea, evaluate_held_out, format_table, segment_area  # noqa: E402
from modalseg.benchmarks.flood import flood_table, is_flood_package, print_flood_table  # noqa: E402
from modalseg.models.data.chips import split_area  # noqa: E402
from modalseg.models.data.rasters import find_lidar_stacks  # noqa: E402
from modalseg.models.train import CLASS_NAMES, evaluate  # noqa: E402

SOURCE_OF_KIND = {"optical": "rgb", "nir": "nir", "ndsm": "ndsm", "dsm": "dsm", "dtm": "dtm"}
GROUPS = (("lidarhd_elevation", "towns"), ("lidarhd_houses", "rgb_tiles"), ("lidarhd_fields", "rgb_tiles"))


def validation_areas(data: Path):
    areas, groups = [], []
    for folder, group in GROUPS:
        for stack in find_lidar_stacks(data / folder, ("rgb", "nir", "ndsm")):
            areas.append(split_area(stack, 0.2, "right")[1])
            groups.append(group)
    return areas, groups


def package_cfg(meta) -> Dict:
    return {"modalities": [{"name": m.name, "bands": m.bands, "source": SOURCE_OF_KIND.get(m.kind, m.kind),
                            "normalization": m.normalization} for m in meta.modalities],
            "classes": [{"value": c.value} for c in meta.classes], "foreground": [0, 1, 2, 3]}


def robustness_by_class(predictor: OnnxPredictor, areas, cfg) -> Dict[str, Dict[str, float]]:
    """Mean robustness share of each modality over the pixels of each reference class, on the
    strips that carry every modality of the package."""
    from modalseg.engine.normalize import normalize, own_statistics
    from modalseg.models.data.chips import as_normalization

    mods = cfg["modalities"]
    k = len(mods)
    total, count = np.zeros((len(CLASS_NAMES), k)), np.zeros(len(CLASS_NAMES))
    for area in areas:
        if not all(m["source"] in area.stack.files for m in mods):
            continue
        x0, y0, x1, y1 = area.window
        label = area.stack.read_label(x0, y0, x1 - x0, y1 - y0).astype(int) - 1
        feed = {}
        for m in mods:
            d, ok = area.stack.read(m["source"], x0, y0, x1 - x0, y1 - y0)
            spec = as_normalization(m["normalization"], m["bands"])  # the area is the whole layer here
            feed[m["name"]] = normalize(d, ok, spec, own_statistics(d, ok, spec))
        _, rob = predictor.outputs(feed, [1.0] * k)
        if rob is None:
            return {}
        for c in range(len(CLASS_NAMES)):
            sel = label == c
            if sel.any():
                total[c] += rob[:, sel].sum(1)
                count[c] += sel.sum()
    return {CLASS_NAMES[c]: {m["name"]: round(float(total[c, i] / count[c]), 3) for i, m in enumerate(mods)}
            for c in range(len(CLASS_NAMES)) if count[c]}


def rule_baseline(feed, present, gsd: float = 0.5):
    """Height + roughness (+ greenness): ground < 0.5 m; 0.5-2.5 m low vegetation; above that
    rough = tree, smooth = building; with optical, green flat pixels are low vegetation."""
    ndsm = feed["ndsm"][0]
    pred = np.zeros(ndsm.shape, np.int64)  # ground
    rough = ndimage.generic_filter(ndsm, np.std, size=3) if present[1] else np.zeros_like(ndsm)
    if present[1]:
        pred[(ndsm >= 0.5) & (ndsm < 2.5)] = 2
        tall = ndsm >= 2.5
        pred[tall & (rough > 1.0)] = 3
        pred[tall & (rough <= 1.0)] = 1
    if present[0]:
        r, g = feed["optical"][0], feed["optical"][1]
        green = (g - r) / np.maximum(g + r, 1.0) > 0.05
        if present[1]:
            pred[green & (ndsm < 0.5)] = 2
        else:
            pred[green] = 2
    return pred


BASELINE_CFG = {"modalities": [
    {"name": "optical", "bands": 3, "source": "rgb", "normalization": {"type": "meanstd", "mean": [0, 0, 0], "std": [1, 1, 1]}},
    {"name": "ndsm", "bands": 1, "source": "ndsm", "normalization": {"type": "meanstd", "mean": [0], "std": [1]}}],
    "classes": [{"value": v} for v in range(1, 7)], "foreground": [0, 1, 2, 3]}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def print_table(title: str, res: Dict) -> None:
    print(f"\n{title}")
    hdr = f"  {'group':<10} {'subset':<14} " + " ".join(f"{c[:8]:>8}" for c in CLASS_NAMES) + "   mIoU4"
    print(hdr)
    for group, r in res.items():
        for subset, v in r["subsets"].items():
            ious = " ".join(f"{_pct(v['iou'][c]):>8}" for c in CLASS_NAMES)
            print(f"  {group:<10} {subset:<14} {ious}   {100 * (v['miou'] or 0):.1f}")
        print(f"  {group:<10} Average {100 * r['average']:.1f}  Top-1 {100 * r['top1']:.1f}  "
              f"Last-1 {100 * r['last1']:.1f}")


def segment_houses(package, stack) -> Dict[str, float]:
    """The whole houses tile through ``segment`` (``models.held_out.segment_area``), scored against its
    labels (0 = unlabelled is ignored)."""
    import tempfile

    from osgeo import gdal

    area = HeldOutArea(stack.name, "houses", stack.label, {"rgb": stack.files["rgb"], "ndsm": stack.files["ndsm"]})
    with tempfile.TemporaryDirectory() as folder:
        predicted = segment_area(package, area, ("optical", "ndsm"), Path(folder))
    label = gdal.Open(str(stack.label)).ReadAsArray()
    values = package.metadata.class_values
    iou = per_class(confusion_from_values(label, predicted, values, ignore_values=(0,)))["iou"]
    return {name: float(iou[values.index(value)]) for value, name in ((1, "ground"), (2, "building"))}


def print_fusion_check(subsets: Dict, optical_only: Dict[str, float]) -> None:
    """Does optical + elevation beat each single modality, and the optical-only network?"""
    both = subsets.get("optical+ndsm", {}).get("miou")
    if both is None:
        return
    rivals = {f"subset {k}": v["miou"] for k, v in subsets.items() if k != "optical+ndsm"}
    rivals.update({f"network {k}": v for k, v in optical_only.items()})
    verdict = "beats" if all(both > v for v in rivals.values()) else "does NOT beat"
    print(f"  fusion check (rgb_tiles): optical+ndsm {100 * both:.1f} {verdict} "
          + ", ".join(f"{k} {100 * v:.1f}" for k, v in rivals.items()))


def print_held_out(models: str, baselines: str, data: Path, threads: int) -> Dict[str, Dict]:
    """The held-out table of every package and baseline (``models.held_out``), printed first."""
    print("held-out set (models/data/holdout.py): whole tiles and the optical area through segment, native GSD")
    figures = {}
    for folder in (models, baselines):
        for onnx_path, listed in list_packages(folder):
            if is_flood_package(listed):
                continue  # no SAR on the held-out tiles: the flood table below
            package = load_package(onnx_path)
            held = evaluate_held_out(package, data, threads, log=lambda text: None)
            meta = package.metadata
            print("\n" + format_table(f"{meta.name} {meta.version} ({meta.architecture})", held, meta.classes))
            print(f"  protocol: {held['protocol']}")
            figures[meta.name] = held
    return figures


def main(argv: List[str] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=str(ROOT / "resources" / "models"))
    ap.add_argument("--baselines", default=str(ROOT / "benchmarks" / "baselines"),
                    help="packages trained on optical only, evaluated as baselines")
    ap.add_argument("--data", default=str(shared_data_folder()))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write all figures to this JSON file")
    a = ap.parse_args(argv)
    data = Path(a.data)
    everything = {"held_out": print_held_out(a.models, a.baselines, data, a.threads)}
    areas, groups = validation_areas(data)
    print(f"\nsecondary: validation = right 20 % strip of {len(areas)} LiDAR HD tiles, native GSD (beside "
          "training pixels, and used to choose each checkpoint)")
    base = evaluate(rule_baseline, areas, groups, BASELINE_CFG)
    print_table("rule baseline (nDSM height + roughness, greenness; no learning)", base)
    everything["rule_baseline"] = base
    houses = find_lidar_stacks(data / "lidarhd_houses", ("rgb", "ndsm"))[0]
    optical_only = {}
    for onnx_path, listed in list_packages(a.baselines):
        if is_flood_package(listed):
            continue
        package = load_package(onnx_path)
        res = evaluate(OnnxPredictor(package, a.threads), areas, groups, package_cfg(package.metadata))
        print_table(f"baseline {package.metadata.name} {package.metadata.version}: "
                    f"{package.metadata.description[:110]}", res)
        everything[package.metadata.name] = res
        optical_only[package.metadata.name] = res["rgb_tiles"]["subsets"]["optical"]["miou"]
    for onnx_path, listed in list_packages(a.models):
        if is_flood_package(listed):
            continue
        package = load_package(onnx_path)
        meta = package.metadata
        cfg = package_cfg(meta)
        predictor = OnnxPredictor(package, a.threads)
        res = evaluate(predictor, areas, groups, cfg)
        print_table(f"{meta.name} {meta.version} ({meta.architecture}); protocol: "
                    f"{meta.metrics.get('protocol', 'not stated')[:100]}", res)
        rob = robustness_by_class(predictor, areas, cfg)
        if rob:
            print("  mean robustness per reference class (rgb_tiles strips, all modalities present):")
            for name, shares in rob.items():
                print(f"    {name:<15} " + "  ".join(f"{m} {v:.2f}" for m, v in shares.items()))
        whole = segment_houses(package, houses)
        print(f"  houses tile through `segment` (whole tile, RGB + nDSM; partly seen in training): "
              f"building IoU {100 * whole['building']:.1f}, ground IoU {100 * whole['ground']:.1f}")
        everything[meta.name] = {"validation": res, "houses_whole": whole, "robustness": rob}
        print_fusion_check(res["rgb_tiles"]["subsets"], optical_only)
    flood = flood_table(data / "ombria_s1s2" / "test")
    print_flood_table(flood)
    everything["flood"] = flood
    if a.json:
        Path(a.json).write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
