"""Honest accuracy of a model package: the held-out set (``models.data.holdout``), whole, through ``segment``.

    python -m modalseg.models.held_out --package resources/models/modalseg-sgma-urban [--write]

Every held-out LiDAR tile is run whole, at its native GSD, through ``run_segmentation`` (what the
``segment`` algorithm runs: binding, grids, tiling, blending, the engine's resampling when the
pixel size is outside the package's range), for every modality subset of the package the area can
supply; so is the held-out optical area, the BD ORTHO orthophoto, whose labels (and nDSM) are its
LiDAR cloud rasterised onto the orthophoto grid with ``rasterize_point_cloud`` and the default LAS
class table of the LiDAR-labels workflow (cached in a temporary folder; the same inputs give the
same files). Confusion matrices are pooled per modality subset, and per subset and GSD group
(0.5 m tiles, 2 m tile, optical area). mIoU is over ground, building, low vegetation and tree,
leaving out those with fewer than ``MIN_SUPPORT`` reference pixels in the pool.

``--write`` stores the figures as ``metrics.held_out`` (the form every ModalSeg package uses:
``{"protocol", "subsets": {"optical+ndsm": {"miou", "per_class", "pixels"}}, "groups"}``, percent)
in the JSON metadata and in the graph's embedded copy, and re-renders the model card.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..engine.binding import LayerInput, bind_modalities, role_of_kind
from ..engine.errors import WARNING_PREFIX, EngineError
from ..engine.grid import GridRequest, grid_of
from ..engine.metrics import confusion_from_values, modality_subsets, per_class
from ..engine.package import METADATA_KEY, ClassInfo, ModelPackage, PackageError, load_package, parse_metadata
from ..engine.writers import class_nodata_value
from .data.holdout import HELD_OUT_OPTICAL_AREA, HELD_OUT_STACKS
from .data.point_cloud_stacks import rasterised_stack
from .data.shared_data import SHARED_DATA

Log = Callable[[str], None]
MIOU_CLASS_VALUES = (1, 2, 3, 4)  # ground, building, low vegetation, tree (the targets)
MIN_SUPPORT = 200  # the same rule as models.train's validation: a class with a handful of pixels says nothing
OPTICAL_GROUP = "optical area"

# What feeds a modality kind in a held-out area: (raster key of the area, bands; None = the first ones).
# The false-colour orthophoto (IRC) is NIR, red, green: NIR is its band 1.
LAYER_OF_KIND: Dict[str, Tuple[str, Optional[Tuple[int, ...]]]] = {
    "optical": ("rgb", None), "nir": ("irc", (1,)), "ndsm": ("ndsm", None), "dsm": ("dsm", None),
    "dtm": ("dtm", None)}


@dataclass(frozen=True)
class HeldOutArea:
    name: str
    group: str  # GSD group: "0.5 m tiles", "2 m tiles", OPTICAL_GROUP
    label: Path
    rasters: Dict[str, Path]  # key of LAYER_OF_KIND -> file on the label's grid


def _tile_group(label: Path) -> str:
    return f"{grid_of(str(label)).gsd_metres():.2g} m tiles"


def held_out_areas(classes: Sequence[ClassInfo], data: Path = SHARED_DATA, cache: Optional[Path] = None,
                   log: Log = print) -> List[HeldOutArea]:
    """The held-out tiles and the optical area, with its LiDAR labels rasterised (once per class scheme)."""
    areas = []
    for folder, stems in HELD_OUT_STACKS.items():
        for stem in stems:
            label = data / folder / f"{stem}_label.tif"
            if not label.exists():
                raise EngineError(f"held-out tile '{label}' does not exist (is the shared data folder complete?)")
            rasters = {key: data / folder / f"{stem}_{key}.tif" for key in ("ndsm", "dsm", "dtm")}
            areas.append(HeldOutArea(stem, _tile_group(label), label,
                                     {k: p for k, p in rasters.items() if p.exists()}))
    areas.append(_optical_area(classes, data, cache, log))
    return areas


def _optical_area(classes: Sequence[ClassInfo], data: Path, cache: Optional[Path], log: Log) -> HeldOutArea:
    folder = data / HELD_OUT_OPTICAL_AREA["folder"]
    rgb, irc, cloud = (folder / HELD_OUT_OPTICAL_AREA[k] for k in ("rgb", "irc", "point_cloud"))
    for path in (rgb, cloud):
        if not path.exists():
            raise EngineError(f"the held-out optical area's file '{path}' does not exist")
    stack = rasterised_stack(rgb, cloud, classes, cache or Path(tempfile.gettempdir()) / "modalseg-held-out",
                             log=lambda text: log(f"held-out optical area: {text}"))
    rasters = {"rgb": rgb, "ndsm": stack.files["ndsm"]}
    if irc.exists():
        rasters["irc"] = irc
    return HeldOutArea(rgb.stem, OPTICAL_GROUP, stack.label, rasters)


def area_subsets(package: ModelPackage, area: HeldOutArea) -> List[Tuple[str, ...]]:
    """The package's modality subsets whose every modality the area can supply."""
    meta = package.metadata
    can = {m.name for m in meta.modalities if LAYER_OF_KIND.get(m.kind, ("?",))[0] in area.rasters}
    return [s for s in modality_subsets(meta.modality_names) if set(s) <= can]


def area_layers(package: ModelPackage, area: HeldOutArea, subset: Sequence[str],
                optical: Tuple[str, str] = ("rgb", "rgb")) -> Dict[str, LayerInput]:
    """The layers (by role, as ``segment`` takes them) that give ``area``'s rasters for the modalities of
    ``subset``; ``optical``: the area's raster for the optical modality and the optical type it is given
    as (``("irc", "irc")``: its false-colour image, declared; ``benchmarks/false_colour``)."""
    layers: Dict[str, LayerInput] = {}
    for spec in package.metadata.modalities:
        if spec.name in subset:
            key, bands = LAYER_OF_KIND[spec.kind]
            if spec.kind == "optical":
                key, optical_type = optical
                layers["optical"] = LayerInput(str(area.rasters[key]), bands, optical_type=optical_type)
                continue
            layers[role_of_kind(spec.kind)] = LayerInput(str(area.rasters[key]), bands,
                                                         spec.kind if spec.kind in ("dsm", "ndsm") else "auto")
    return layers


def segment_area(package: ModelPackage, area: HeldOutArea, subset: Sequence[str], folder: Path,
                 threads: int = 1, optical: Tuple[str, str] = ("rgb", "rgb")) -> np.ndarray:
    """The class map ``segment`` makes of ``area`` from the modalities of ``subset`` (on the label's grid)."""
    from osgeo import gdal

    from ..engine.outputs import OutputPaths
    from ..engine.segment import RunOptions, run_segmentation

    sources, _ = bind_modalities(package.metadata, area_layers(package, area, subset, optical))
    out = folder / f"{area.name}-{'+'.join(subset)}.tif"
    run_segmentation(sources, package, GridRequest(), OutputPaths(str(out)), RunOptions(threads=threads))
    classes = gdal.Open(str(out)).ReadAsArray()
    os.remove(out)
    return classes


def figures(cm: np.ndarray, class_values: Sequence[int]) -> Dict[str, object]:
    """Contract form of one pooled confusion matrix (``confusion_from_values`` layout): percent."""
    n = len(class_values)
    iou = per_class(cm)["iou"][:n]
    support = cm[:n].sum(1)
    wanted = [i for i, v in enumerate(class_values) if v in MIOU_CLASS_VALUES] or list(range(n))
    in_miou = [i for i in wanted if support[i] >= MIN_SUPPORT and np.isfinite(iou[i])]
    miou = float(np.mean(iou[in_miou])) if in_miou else float("nan")
    return {"miou": round(100 * miou, 1) if in_miou else None,
            "per_class": {str(v): round(100 * float(iou[i]), 1) for i, v in enumerate(class_values)
                          if support[i] > 0 and np.isfinite(iou[i])},
            "pixels": int(support.sum()),
            "classes_in_miou": [int(class_values[i]) for i in in_miou]}


SEEN_IN_TRAINING = "this package was trained before the held-out set was fixed"


def states_seen_in_training(package: ModelPackage) -> bool:
    """Whether the package's stored held-out protocol says its held-out tiles were in its training."""
    return SEEN_IN_TRAINING in str((package.metadata.metrics.get("held_out") or {}).get("protocol", ""))


def protocol(areas: Sequence[HeldOutArea], seen_in_training: bool) -> str:
    tiles = ", ".join(a.name for a in areas if a.group != OPTICAL_GROUP)
    text = (f"held-out set of models/data/holdout.py: whole LiDAR HD tiles {tiles} (nDSM; labels = IGN "
            "production classes) and the BD ORTHO optical area "
            f"{HELD_OUT_OPTICAL_AREA['rgb']} (labels and nDSM rasterised from its LiDAR cloud, classes ground "
            "and building only), each given whole at native GSD to segment (run_segmentation, which resamples it "
            "into the package's GSD range); confusion "
            f"pooled per modality subset; mIoU over ground, building, low vegetation, tree with >= {MIN_SUPPORT} "
            "reference pixels; none of these areas is trained on or used to choose a checkpoint")
    if seen_in_training:
        text = (text.replace("; none of these areas is trained on or used to choose a checkpoint", "")
                + f"; CAUTION: {SEEN_IN_TRAINING}: the left 80 % of "
                "each held-out LiDAR tile was in its training data and the right 20 % chose its checkpoint, so "
                "the tile figures are optimistic (only the optical area was never seen)")
    return text


def twin_protocol(own_protocol: str, twins: Sequence[ModelPackage], package: ModelPackage) -> str:
    """The protocol of figures measured on ``twins``: the package's recipe trained again with the
    held-out set left out (one per seed), standing in for shipped weights that saw the held-out tiles."""
    runs = ", ".join(f"{t.metadata.metrics.get('steps')} steps on {t.metadata.metrics.get('threads')} thread(s)"
                     for t in twins)
    own = f"{package.metadata.metrics.get('steps')} on {package.metadata.metrics.get('threads')}"
    seeds = f"the mean of {len(twins)} seeds (spread = half their range)" if len(twins) > 1 else "one seed"
    return (f"{own_protocol}; these are the figures of a twin: the package's own recipe trained again with the "
            f"held-out set left out (models.train always leaves it out now; {seeds}; {runs}, the shipped weights "
            f"{own}), because {SEEN_IN_TRAINING}: "
            "the shipped weights also trained on the left 80 % of each held-out LiDAR tile, so they score higher "
            "there (own_weights, optimistic), while the twin's figures are what a place never seen can expect")


def seeds_protocol(own_protocol: str, runs: Sequence[ModelPackage]) -> str:
    """The protocol of figures averaged over ``runs``: the shipped package and other seeds of its recipe."""
    seeds = ", ".join(str(r.metadata.metrics.get("seed", "?")) for r in runs)
    return (f"{own_protocol}; the mean of {len(runs)} runs of the package's recipe (seeds {seeds}; the shipped "
            "weights are the first), every one trained without the held-out set; spread = half their range")


def mean_over_seeds(runs: Sequence[Dict[str, object]]) -> Dict[str, object]:
    """Figures of several twins (seeds) of one recipe: mIoU and per-class IoU averaged per subset
    and group, with ``spread`` (half the range of the mIoU) and ``seeds`` beside each mIoU."""
    def mean(rows: List[Dict[str, object]]) -> Dict[str, object]:
        mious = [r["miou"] for r in rows if r["miou"] is not None]
        classes = [k for k in rows[0]["per_class"] if all(k in r["per_class"] for r in rows)]
        return {**rows[0], "miou": round(float(np.mean(mious)), 1) if mious else None,
                "per_class": {k: round(float(np.mean([r["per_class"][k] for r in rows])), 1) for k in classes},
                "spread": round((max(mious) - min(mious)) / 2, 1) if mious else None, "seeds": [r["miou"] for r in rows]}

    first = runs[0]
    return {**first,
            "subsets": {k: mean([r["subsets"][k] for r in runs]) for k in first["subsets"]},
            "groups": {g: {k: mean([r["groups"][g][k] for r in runs]) for k in subsets}
                       for g, subsets in first["groups"].items()}}


def same_recipe(package: ModelPackage, twin: ModelPackage) -> None:
    """EngineError unless ``twin`` is the same network, inputs and classes as ``package``."""
    a, b = package.metadata, twin.metadata
    for what, mine, its in (("name", a.name, b.name), ("architecture", a.architecture, b.architecture),
                            ("modalities", a.modality_names, b.modality_names),
                            ("classes", a.class_values, b.class_values)):
        mine, its = (x if isinstance(x, str) else list(x) for x in (mine, its))
        if mine != its:
            raise EngineError(f"the twin '{twin.onnx_path}' is not the same recipe as '{package.onnx_path}': its "
                              f"{what} differ ({its} instead of {mine})")


def measures(meta) -> bool:
    """Whether the held-out set can score this package: its labels are the urban LiDAR scheme, so the
    package must have classes 1-4 (ground, building, low vegetation, tree); a flood model has not."""
    return set(MIOU_CLASS_VALUES) <= set(meta.class_values)


def evaluate_held_out(package: ModelPackage, data: Path = SHARED_DATA, threads: int = 1,
                      seen_in_training: Optional[bool] = None, cache: Optional[Path] = None,
                      log: Log = print) -> Dict[str, object]:
    """``metrics.held_out`` of ``package``: figures per modality subset and per subset and GSD group.
    ``seen_in_training`` None: as the package's stored protocol says (``states_seen_in_training``)."""
    if seen_in_training is None:
        seen_in_training = states_seen_in_training(package)
    meta = package.metadata
    if not measures(meta):
        raise EngineError(f"the held-out set is labelled with the urban classes 1-4 (ground, building, low "
                          f"vegetation, tree); model '{meta.name}' has classes "
                          f"{', '.join(f'{c.value} {c.name}' for c in meta.classes)}")
    values = list(meta.class_values)
    ignore = (0, class_nodata_value(meta.classes))
    areas = held_out_areas(meta.classes, data, cache, log)
    n = len(values) + 1
    pooled: Dict[str, np.ndarray] = {}
    grouped: Dict[str, Dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory(prefix="modalseg-held-out-") as folder:
        for area in areas:
            label = grid_of(str(area.label))
            reference = _read(area.label)
            for subset in area_subsets(package, area):
                key = "+".join(subset)
                predicted = segment_area(package, area, subset, Path(folder), threads)
                if predicted.shape != reference.shape:
                    raise EngineError(f"held-out area '{area.name}': the class map ({predicted.shape}) is not on the "
                                      f"label grid ({label.height}, {label.width})")
                cm = confusion_from_values(reference, predicted, values, ignore)
                pooled[key] = pooled.get(key, np.zeros((n, n), np.int64)) + cm
                group = grouped.setdefault(area.group, {})
                group[key] = group.get(key, np.zeros((n, n), np.int64)) + cm
                log(f"  {area.name} ({area.group}) {key}: mIoU {figures(cm, values)['miou']}")
    order = [("+".join(s)) for s in modality_subsets(meta.modality_names)]
    return {"protocol": protocol(areas, seen_in_training), "optimistic": bool(seen_in_training),
            "subsets": {k: figures(pooled[k], values) for k in order if k in pooled},
            "groups": {g: {k: figures(cms[k], values) for k in order if k in cms} for g, cms in grouped.items()}}


def _read(path: Path) -> np.ndarray:
    from osgeo import gdal

    return gdal.Open(str(path)).ReadAsArray()


def format_table(meta_name: str, held_out: Dict[str, object], classes: Sequence[ClassInfo]) -> str:
    """Rows per GSD group and subset, then the pooled subsets: per-class IoU, mIoU, pixels."""
    names = [c.name.split(" /")[0][:9] for c in classes]
    lines = [f"{meta_name}: held-out IoU % (mIoU over ground, building, low vegetation, tree)",
             f"  {'group':<14} {'subset':<14} " + " ".join(f"{n:>9}" for n in names) + "    mIoU   pixels"]

    def row(group: str, subset: str, f: Dict[str, object]) -> str:
        ious = " ".join(f"{f['per_class'].get(str(c.value), '-'):>9}" for c in classes)
        miou = "-" if f["miou"] is None else f"{f['miou']:.1f}"
        return f"  {group:<14} {subset:<14} {ious} {miou:>7} {f['pixels']:>8}"

    for group, subsets in held_out["groups"].items():
        lines += [row(group, subset, f) for subset, f in subsets.items()]
    lines += [row("all (pooled)", subset, f) for subset, f in held_out["subsets"].items()]
    return "\n".join(lines)


def store_metrics(package: ModelPackage, metrics: Dict[str, object]) -> List[Path]:
    """Set ``metrics`` entries (e.g. ``held_out``, ``few_labels``) in the package's JSON, its graph's
    embedded metadata and its card; each file is replaced whole (written beside, then renamed), so a
    failure leaves the old one. Returns the precision variants beside the graph: they record the old
    graph's checksum, so they are refused until made again (``models.quantize``)."""
    import onnx

    from .card import write_card

    sidecar = package.onnx_path.with_suffix(".json")
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    meta.setdefault("metrics", {}).update(metrics)
    parse_metadata(meta)  # the engine's reader is the judge
    model = onnx.load(str(package.onnx_path))
    entries = [e for e in model.metadata_props if e.key == METADATA_KEY]
    if len(entries) != 1:
        raise EngineError(f"model '{package.onnx_path.name}' holds {len(entries)} ModalSeg metadata entries, not one")
    entries[0].value = json.dumps(meta)
    graph_tmp, sidecar_tmp = (p.with_name(f".{p.name}.tmp") for p in (package.onnx_path, sidecar))
    onnx.save(model, str(graph_tmp))
    sidecar_tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(graph_tmp, package.onnx_path)
    os.replace(sidecar_tmp, sidecar)
    write_card(package.folder, meta)
    return sorted(package.variants.values())


def stale_variants_note(variants: Sequence[Path]) -> str:
    names = ", ".join(p.name for p in variants)
    return (WARNING_PREFIX + f"{names} recorded the graph's old checksum and is now refused (segment runs fp32 instead): "
            "make it again with python -m modalseg.models.quantize")


def store_and_report(package: ModelPackage, key: str, value: Dict[str, object]) -> None:
    """``store_metrics`` for one entry, saying on stdout where it went and which variants it made stale."""
    stale = store_metrics(package, {key: value})
    print(f"stored metrics.{key} in {package.onnx_path.with_suffix('.json')}, its graph and README.md")
    if stale:
        print(stale_variants_note(stale))


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="Accuracy of a model package on the held-out set.")
    ap.add_argument("--package", required=True, help="package folder or .onnx file")
    ap.add_argument("--write", action="store_true", help="store metrics.held_out in the package and its card")
    ap.add_argument("--data", default=str(SHARED_DATA), help="shared data folder (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seen-in-training", action="store_true", default=None,
                    help="the package was trained before the held-out set existed: say so in the protocol "
                         "(default: as its stored protocol says)")
    ap.add_argument("--seed-run", action="append", help="another seed of the package's own recipe, trained "
                    "like it without the held-out set (repeatable): the mean over the package and these runs is "
                    "stored, with the spread, and the package's own figures beside them as own_weights")
    ap.add_argument("--twin", action="append", help="package trained by the same recipe with the held-out set "
                    "left out (repeat for several seeds: the mean is stored, with the spread): the figures are "
                    "measured on it and stored in --package (whose own weights saw the held-out tiles), with the "
                    "package's own figures beside them as own_weights")
    a = ap.parse_args(argv)
    try:
        if a.twin and a.seed_run:
            raise EngineError("--twin (weights that saw the held-out tiles) and --seed-run (weights that did not) "
                              "exclude each other")
        package = load_package(a.package)
        runs = [load_package(path) for path in a.twin or a.seed_run or ()]
        for run in runs:
            same_recipe(package, run)
        held_out = evaluate_held_out(package, Path(a.data), a.threads, True if a.twin else a.seen_in_training)
        if runs:
            own = held_out
            others = [evaluate_held_out(run, Path(a.data), a.threads, seen_in_training=False) for run in runs]
            held_out = mean_over_seeds(others if a.twin else [own] + others)
            held_out["protocol"] = (twin_protocol(held_out["protocol"], runs, package) if a.twin
                                    else seeds_protocol(own["protocol"], [package] + runs))
            held_out["own_weights"] = {k: f["miou"] for k, f in own["subsets"].items()}
            held_out["own_weights_seen"] = bool(a.twin)
            held_out["optimistic"] = False  # twins and seeds never trained on the held-out set
    except (EngineError, PackageError) as exc:
        raise SystemExit(f"held-out evaluation failed: {exc}") from None
    print(format_table(f"{package.metadata.name} {package.metadata.version}", held_out, package.metadata.classes))
    print(f"protocol: {held_out['protocol']}")
    if a.write:
        store_and_report(package, "held_out", held_out)


if __name__ == "__main__":
    main()
