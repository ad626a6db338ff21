"""Flood table: ``python -m modalseg.benchmarks.flood`` (also printed by ``benchmarks.accuracy``).

The bundled ``modalseg-flood-s1s2`` (SGMA, any subset) and the ASANet comparison trained on the
same split (``benchmarks/baselines/flood-asanet``, both inputs required) on OMBRIA ``test/``: 70
whole chips never trained on nor used to select a checkpoint or a recipe. Each chip is run whole
through the package's ONNX graph (engine runtime, CPU), normalised as the engine normalises a
whole layer (its own percentiles). Figures: water IoU (pooled over the chips) per input subset,
Average / Top-1 / Last-1 over the subsets and Last-1 / Top-1; then cloudy vs clear chips (the
rule is printed) with the mean SAR share of the robustness map and the water IoU of each group.
Beside them, two threshold lines for SAR alone (water is dark): the classical per-chip Otsu split,
a method that needs no labels, and the best single threshold of each chip chosen *with* its mask,
which is no method but the ceiling of any one-threshold-per-scene rule on these chips.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..engine.metrics import confusion_matrix, modality_subsets, per_class, subset_table
from ..engine.normalize import normalize, own_statistics
from ..engine.package import ModelPackage, load_package
from ..models.data.ombria import WATER, OmbriaChip, find_ombria_chips
from ..models.data.shared_data import PLUGIN_ROOT, SHARED_DATA
from .common import OnnxPredictor

SGMA_PACKAGE = PLUGIN_ROOT / "resources" / "models" / "modalseg-flood-s1s2"
ASANET_PACKAGE = PLUGIN_ROOT / "benchmarks" / "baselines" / "flood-asanet"
SOURCES = {"optical": "s2_after", "sar": "s1_after"}  # package modality -> OMBRIA layer
# Cloudy chip: more than CLOUDY_SHARE of its pixels are bright (max of R, G, B >= BRIGHT) and grey
# (saturation (max - min) / max <= GREY), on the 8-bit chip itself; water and land are darker or
# more coloured, clouds and haze white to pale blue in these display stretches. Set by looking at
# train/ chips (60 of 624 are cloudy by it), not at test/.
BRIGHT, GREY, CLOUDY_SHARE = 120, 0.35, 0.1
CLOUD_RULE = (f"cloudy = more than {CLOUDY_SHARE:.0%} of the chip's pixels bright (max(R,G,B) >= {BRIGHT} of 255) "
              f"and grey (saturation (max-min)/max <= {GREY})")


def is_flood_package(meta) -> bool:
    """A package reading SAR: the flood table's, not the urban tables' (no SAR on the LiDAR tiles)."""
    return any(spec.kind == "sar" for spec in meta.modalities)


def cloud_share(rgb: np.ndarray) -> float:
    """Share of bright, low-saturation pixels of an 8-bit RGB chip (3 x H x W)."""
    high, low = rgb.max(axis=0), rgb.min(axis=0)
    saturation = (high - low) / np.maximum(high, 1.0)
    return float(np.mean((high >= BRIGHT) & (saturation <= GREY)))


@dataclass
class ChipResult:
    name: str
    cloudy: bool
    confusion: np.ndarray  # 2 x 2, land / water
    sar_share: Optional[float]  # mean SAR share of the robustness map (None: no robustness output)


def run_chips(package: ModelPackage, chips: Sequence[OmbriaChip], subset: Tuple[str, ...]) -> List[ChipResult]:
    """Every chip whole through the package's ONNX graph with the modalities of ``subset``."""
    meta = package.metadata
    predictor = OnnxPredictor(package, threads=1)
    present = [1.0 if n in subset else 0.0 for n in meta.modality_names]
    results = []
    for chip in chips:
        feeds = {}
        for name in meta.modality_names:
            spec = meta.modality(name)
            if name in subset:
                data, valid = chip.read(SOURCES[name])
                feeds[name] = normalize(data, valid, spec.normalization, own_statistics(data, valid, spec.normalization))
            else:
                feeds[name] = np.zeros((spec.bands, chip.height, chip.width), np.float32)
        logits, robustness = predictor.outputs(feeds, present)
        prediction = logits.argmax(axis=0)  # class index: 0 land, 1 water
        reference = (chip.read_label() == WATER).astype(np.int64)
        share = None
        if robustness is not None and "sar" in subset:
            share = float(robustness[meta.modality_names.index("sar")].mean())
        optical, _ = chip.read(SOURCES["optical"])
        results.append(ChipResult(chip.name, cloud_share(optical) > CLOUDY_SHARE,
                                  confusion_matrix(reference, prediction, 2), share))
    return results


def sar_threshold_baselines(chips: Sequence[OmbriaChip]) -> Dict[str, float]:
    """Water IoU % (pooled) of SAR < per-chip Otsu threshold, and of SAR < the per-chip threshold
    that maximises the chip's own water IoU (64 candidates: the chip's percentiles)."""
    from skimage.filters import threshold_otsu

    otsu, best = np.zeros((2, 2), np.int64), np.zeros((2, 2), np.int64)
    for chip in chips:
        sar, valid = chip.read(SOURCES["sar"])
        values, reference = sar[0][valid], (chip.read_label()[valid] == WATER).astype(np.int64)
        otsu += confusion_matrix(reference, (values < threshold_otsu(values)).astype(np.int64), 2)
        candidates = [confusion_matrix(reference, (values < t).astype(np.int64), 2)
                      for t in np.unique(np.percentile(values, np.linspace(0, 100, 64)))]
        best += max(candidates, key=lambda cm: per_class(cm)["iou"][1] if cm[1].sum() or cm[:, 1].sum() else 1.0)
    return {"otsu": 100.0 * float(per_class(otsu)["iou"][1]), "best_threshold": 100.0 * float(per_class(best)["iou"][1])}


def water_iou(results: Sequence[ChipResult]) -> float:
    """Water IoU in percent, pooled over the chips' pixels."""
    return 100.0 * float(per_class(sum(r.confusion for r in results))["iou"][1])


def flood_table(test_folder: Path, sgma: Path = SGMA_PACKAGE, asanet: Path = ASANET_PACKAGE) -> Dict[str, object]:
    """All figures of the flood table (also what the model card quotes)."""
    chips = find_ombria_chips(test_folder, sorted(SOURCES.values()))
    out: Dict[str, object] = {"chips": len(chips), "rule": CLOUD_RULE}
    package = load_package(sgma)
    names = tuple(package.metadata.modality_names)
    per_subset = {subset: run_chips(package, chips, subset) for subset in modality_subsets(names)}
    sgma_iou = {"+".join(s): water_iou(r) for s, r in per_subset.items()}
    table = subset_table(sgma_iou)
    out["sgma"] = {"name": f"{package.metadata.name} {package.metadata.version}", "water_iou": sgma_iou, **table,
                   "last1_over_top1": table["last1"] / table["top1"]}
    both = per_subset[names]
    groups = {}
    for label, cloudy in (("cloudy", True), ("clear", False)):
        members = [r for r in both if r.cloudy == cloudy]
        groups[label] = {"chips": len(members),
                         "sar_share": float(np.mean([r.sar_share for r in members])) if members else None,
                         "water_iou": {"+".join(s): water_iou([r for r in per_subset[s] if r.cloudy == cloudy])
                                       for s in per_subset} if members else {}}
    out["groups"] = groups
    out["sar_thresholds"] = sar_threshold_baselines(chips)
    if asanet.is_dir() and any(asanet.glob("*.onnx")):
        comparison = load_package(asanet)
        out["asanet"] = {"name": f"{comparison.metadata.name} {comparison.metadata.version}",
                         "water_iou": {"+".join(names): water_iou(run_chips(comparison, chips, names))}}
    return out


def print_flood_table(figures: Dict[str, object]) -> None:
    sgma = figures["sgma"]
    names = list(sgma["water_iou"])
    print(f"\nFlood mapping, OMBRIA test/ ({figures['chips']} whole chips, never trained or selected on), "
          "water IoU % pooled over the chips")
    print(f"  {'model':<32}" + "".join(f"{n:>14}" for n in names) + f"{'Average':>9}{'Top-1':>7}{'Last-1':>8}"
          f"{'L1/T1':>7}")
    print(f"  {sgma['name']:<32}" + "".join(f"{sgma['water_iou'][n]:>14.1f}" for n in names)
          + f"{sgma['average']:>9.1f}{sgma['top1']:>7.1f}{sgma['last1']:>8.1f}{sgma['last1_over_top1']:>7.2f}")
    if "asanet" in figures:
        asanet = figures["asanet"]
        print(f"  {asanet['name']:<32}" + "".join(f"{asanet['water_iou'].get(n, float('nan')):>14.1f}"
                                                  if n in asanet["water_iou"] else f"{'-':>14}" for n in names)
              + "   (needs both inputs)")
    else:
        print(f"  ASANet comparison not found at {ASANET_PACKAGE} (training/asanet_flood.json writes it)")
    thresholds = figures["sar_thresholds"]
    print(f"  SAR < per-chip Otsu threshold (no labels): {thresholds['otsu']:.1f}; SAR < each chip's best "
          f"threshold, chosen with its mask (a ceiling, not a method): {thresholds['best_threshold']:.1f}")
    print(f"  {figures['rule']}")
    for label, group in figures["groups"].items():
        if not group["chips"]:
            print(f"  {label:<7} no chip")
            continue
        ious = ", ".join(f"{n} {v:.1f}" for n, v in group["water_iou"].items())
        print(f"  {label:<7} {group['chips']:>3} chips: mean SAR share of the robustness map (both inputs) "
              f"{group['sar_share']:.3f}; water IoU {ious}")


def card_tables(figures: Dict[str, object]) -> Dict[str, object]:
    """The figures as ``metrics.benchmarks`` tables (models.card renders them in the model card)."""
    sgma = figures["sgma"]
    names = list(sgma["water_iou"])
    protocol = (f"OMBRIA test/, {figures['chips']} whole chips never trained on nor used to select a checkpoint or "
                "a recipe, each run whole through the package's ONNX graph with its own percentiles; water IoU % "
                "pooled over the chips (`python -m modalseg.benchmarks.flood`)")
    rows = [[sgma["name"]] + [f"{sgma['water_iou'][n]:.1f}" for n in names]
            + [f"{sgma[k]:.1f}" for k in ("average", "top1", "last1")] + [f"{sgma['last1_over_top1']:.2f}"]]
    if "asanet" in figures:
        asanet = figures["asanet"]
        rows.append([asanet["name"] + " (comparison, not bundled; needs both)"]
                    + [f"{asanet['water_iou'][n]:.1f}" if n in asanet["water_iou"] else "–" for n in names]
                    + ["–"] * 4)
    thresholds = figures["sar_thresholds"]
    for label, key in (("SAR < per-chip Otsu threshold (classical baseline, no labels)", "otsu"),
                       ("SAR < each chip's best threshold, chosen with its mask (a ceiling, not a method)",
                        "best_threshold")):
        rows.append([label] + [f"{thresholds[key]:.1f}" if n == "sar" else "–" for n in names] + ["–"] * 4)
    groups = [[label, str(g["chips"]), "–" if g["sar_share"] is None else f"{g['sar_share']:.3f}"]
              + [f"{g['water_iou'][n]:.1f}" if n in g["water_iou"] else "–" for n in names]
              for label, g in figures["groups"].items()]
    return {
        "flood_subsets": {"title": "Water IoU per input subset, SGMA vs ASANet (OMBRIA test/)", "protocol": protocol,
                          "header": ["model"] + names + ["Average", "Top-1", "Last-1", "Last-1 / Top-1"],
                          "rows": rows},
        "flood_clouds": {"title": "Cloudy vs clear chips: robustness (OMBRIA test/)", "protocol": protocol,
                         "header": ["chips", "count", "mean SAR share (both inputs)"]
                         + [f"water IoU {n}" for n in names], "rows": groups,
                         "notes": [figures["rule"] + "; the SAR share is the robustness map's sar band averaged "
                                   "over the chip's pixels."]},
    }


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED_DATA / "ombria_s1s2" / "test"), help="OMBRIA test/ folder")
    ap.add_argument("--package", default=str(SGMA_PACKAGE), help="SGMA flood package folder")
    ap.add_argument("--asanet", default=str(ASANET_PACKAGE), help="ASANet comparison package folder")
    ap.add_argument("--write", action="store_true",
                    help="store the tables in the SGMA package (metrics.benchmarks) and its model card")
    a = ap.parse_args(argv)
    figures = flood_table(Path(a.data), Path(a.package), Path(a.asanet))
    print_flood_table(figures)
    if a.write:
        from ..models.held_out import store_metrics

        package = load_package(a.package)
        benchmarks = dict(package.metadata.metrics.get("benchmarks", {}))
        benchmarks.update(card_tables(figures))
        store_metrics(package, {"benchmarks": benchmarks})
        print(f"  stored in {package.onnx_path.parent} (metrics.benchmarks, README.md)")


if __name__ == "__main__":
    main()
