"""Model card (README.md beside a package) written from the package's own metadata.

The honest figures come first: ``metrics.held_out`` (``models.held_out``: whole tiles never trained
or selected on) and ``metrics.few_labels`` (``benchmarks/few_labels``: the untuned package against
one fine-tuned on a few polygons); the strip figures of training (``metrics.validation``) follow
as a secondary table. Failure modes are the recipe's (``extra.training_config.package``) plus those
the held-out figures show.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..engine.package import GsdRange
from .weight_storage import HALF, storage_of

LOW_MIOU = 50.0  # a held-out mIoU below this is called a failure mode (segment warns below it too)
LOW_CLASS_IOU = 40.0  # a pooled per-class IoU below this is named among the failure modes

CLASS_KEYS = ["ground", "building", "low_vegetation", "tree", "water", "other"]


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def accuracy_table(validation: Dict[str, Any]) -> str:
    # the LiDAR scheme's columns, or the package's own class keys (e.g. the flood package's land / water)
    keys = [k for r in validation.values() for v in r["subsets"].values() for k in v["iou"]]
    urban = not keys or set(keys) <= set(CLASS_KEYS)
    columns = CLASS_KEYS if urban else list(dict.fromkeys(keys))
    rows = ["| group | subset | " + " | ".join(columns) + (" | mIoU (g, b, lv, t) |" if urban else " | mIoU |"),
            "|---|---|" + "---|" * (len(columns) + 1)]
    for group, r in validation.items():
        for subset, v in r["subsets"].items():
            rows.append(f"| {group} | {subset} | " + " | ".join(_pct(v["iou"].get(c)) for c in columns)
                        + f" | **{_pct(v['miou'])}** |")
        rows.append(f"| {group} | Average / Top-1 / Last-1 | " + " | " * (len(columns) - 1)
                    + f" | {_pct(r['average'])} / {_pct(r['top1'])} / {_pct(r['last1'])} |")
    return "\n".join(rows)


def benchmark_sections(benchmarks: Dict[str, Any]) -> str:
    """``metrics.benchmarks``: tables a benchmark script stored (title, protocol, header, rows, notes)."""
    parts = []
    for table in benchmarks.values():
        rows = ["| " + " | ".join(table["header"]) + " |", "|" + "---|" * len(table["header"])]
        rows += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in table["rows"]]
        notes = "".join(f"\n{note}" for note in table.get("notes", []))
        parts.append(f"## {table['title']}\nProtocol: {table['protocol'].rstrip('.')}.\n\n" + "\n".join(rows) + "\n" + notes + "\n")
    return "\n".join(parts)


def _one(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.1f}"


def held_out_table(held_out: Dict[str, Any], classes: Sequence[Dict[str, Any]]) -> str:
    """Rows per GSD group and modality subset, then the pooled subsets (figures already in percent)."""
    rows = ["| group | subset | " + " | ".join(c["name"] for c in classes) + " | mIoU | labelled px |",
            "|---|---|" + "---|" * (len(classes) + 2)]

    def row(group: str, subset: str, f: Dict[str, Any]) -> str:
        ious = " | ".join(_one(f["per_class"].get(str(c["value"]))) for c in classes)
        spread = f" ± {_one(f['spread'])}" if f.get("spread") is not None else ""  # several seeds: mean ± spread
        return f"| {group} | {subset} | {ious} | **{_one(f['miou'])}**{spread} | {f['pixels']} |"

    for group, subsets in held_out.get("groups", {}).items():
        rows += [row(group, subset, f) for subset, f in subsets.items()]
    rows += [row("all, pooled", subset, f) for subset, f in held_out["subsets"].items()]
    return "\n".join(rows)


def few_labels_table(few: Dict[str, Any]) -> str:
    rows = ["| area | polygons | labelled share of the half | untuned mIoU | fine-tuned mIoU | gain |",
            "|---|---|---|---|---|---|"]
    for name, r in few["areas"].items():
        if "error" in r:
            rows.append(f"| {name} | – | – | – | failed: {r['error']} | – |")
            continue
        rows.append(f"| {name} | {r['polygons']} | {_one(r['cover_percent'])} % | {_one(r['untuned_miou'])} | "
                    f"{_one(r['tuned_miou'])} | {r['tuned_miou'] - r['untuned_miou']:+.1f} |")
    return "\n".join(rows)


def false_colour_table(false_colour: Dict[str, Any]) -> str:
    """mIoU per optical subset: the RGB image, the IRC image fed as RGB, the IRC image declared."""
    rows = ["| subset | true-colour image | false-colour image given as true colour | false-colour image declared |",
            "|---|---|---|---|"]
    for subset, f in false_colour["subsets"].items():
        rows.append(f"| {subset} | {_one(false_colour['true_colour'].get(subset))} | "
                    f"{_one(false_colour['undeclared'].get(subset))} | **{_one(f['miou'])}** |")
    return "\n".join(rows)


def own_weights_line(held_out: Dict[str, Any]) -> str:
    """Figures measured on several runs of the recipe (``models.held_out --twin`` or ``--seed-run``):
    the shipped weights' own beside them."""
    own = held_out.get("own_weights")
    if not own:
        return ""
    figures = ", ".join(f"{subset} {miou:.1f}" for subset, miou in own.items() if miou is not None)
    if held_out.get("own_weights_seen", True):  # twins stand in for weights that saw the held-out tiles
        return (f"\nThe table is the twin's (the same recipe trained without these areas). The shipped weights' own "
                f"mIoU on the same areas, optimistic because they trained on part of the LiDAR tiles: {figures}.\n")
    return (f"\nThe table is the mean over seeds of this recipe, every run trained without these areas. The shipped "
            f"weights are one of those runs; their own mIoU: {figures}.\n")


def observed_failure_modes(meta: Dict[str, Any]) -> List[str]:
    """What the held-out figures show: subsets below ``LOW_MIOU``, classes below ``LOW_CLASS_IOU``."""
    held_out = meta.get("metrics", {}).get("held_out")
    if not held_out:
        return []
    names = {str(c["value"]): c["name"] for c in meta["classes"]}
    found = []
    for subset, f in held_out["subsets"].items():
        if f["miou"] is not None and f["miou"] < LOW_MIOU:
            found.append(f"Held-out accuracy with {subset} alone is low (mIoU {f['miou']:.1f} %): fine-tune on a few "
                         "polygons of your area before relying on it (segment warns when it runs on this subset).")
        weak = [f"{names.get(v, v)} {iou:.1f}" for v, iou in f["per_class"].items() if iou < LOW_CLASS_IOU]
        if weak and (f["miou"] is None or f["miou"] >= LOW_MIOU):
            found.append(f"Held-out IoU below {LOW_CLASS_IOU:.0f} % with {subset}: {', '.join(weak)}.")
    return found


def recipe_failure_modes(meta: Dict[str, Any]) -> List[str]:
    return list(meta.get("extra", {}).get("training_config", {}).get("package", {}).get("failure_modes", []))


_LIDAR_GROUPS_NOTE = """
`towns`: lidarhd_elevation tiles (nDSM only); `rgb_tiles`: lidarhd_houses + lidarhd_fields. Labels are
IGN production classifications (some errors); the houses tile has no vegetation labels. Small strips:
read single-class IoUs with care.
"""


def _honest_sections(m: Dict[str, Any], meta: Dict[str, Any]) -> str:
    parts = []
    if m.get("held_out"):
        parts.append(f"""## Held-out accuracy (IoU %, whole held-out areas; the protocol says what the package saw)
Protocol: {m['held_out']['protocol'].rstrip('.')}.

{held_out_table(m['held_out'], meta['classes'])}
{own_weights_line(m['held_out'])}
`segment` logs the figure of the modality subset in use and warns when its mIoU is below {LOW_MIOU:.0f}.
""")
    if m.get("false_colour"):
        parts.append(f"""## False-colour infrared orthophotos (mIoU %, `benchmarks/false_colour.py`)
Protocol: {m['false_colour']['protocol'].rstrip('.')}.

{false_colour_table(m['false_colour'])}

Declare a false-colour image with *Optical image type*; `segment` then logs the declared figure.
""")
    if m.get("benchmarks"):
        parts.append(benchmark_sections(m["benchmarks"]))
    if m.get("few_labels"):
        parts.append(f"""## Few-label fine-tuning (mIoU %, `benchmarks/few_labels.py`)
Protocol: {m['few_labels']['protocol'].rstrip('.')}.

{few_labels_table(m['few_labels'])}
""")
    return "\n".join(parts)


_HALF_STORAGE_NOTE = ("Weights stored in float16 (graph and fine-tuning weights: half the size); the graph computes "
                      "in float32.\n")


def _runs_at(gsd: Dict[str, Any]) -> str:
    return f"{gsd['min']} m" if gsd['min'] == gsd['max'] else f"{gsd['min']}–{gsd['max']} m"


def _pixel_size_text(gsd: Dict[str, Any]) -> str:
    """The card's sentence on pixel sizes: the network's range and, when it differs, the layers' range."""
    low, high = GsdRange.of(gsd).inputs
    if (low, high) == (gsd["min"], gsd["max"]):
        return (f"{low}–{high} m (trained around {gsd['native']} m); `segment` resamples outside that range and "
                "warns when the pixel size is more than twice outside it.")
    return (f"layers of {low}–{high} m (the network runs at {_runs_at(gsd)}: `segment` resamples every layer to it, "
            "as training did); `segment` warns when the pixel size is more than twice outside the layers' range.")


def write_card(folder: "str | Path", meta: Dict[str, Any], failure_modes: Optional[Sequence[str]] = None) -> Path:
    """Write ``README.md`` into a package folder; every figure comes from ``meta``. Failure modes:
    ``failure_modes`` (default: the recipe's), then those the held-out figures show."""
    m = meta["metrics"]
    failure_modes = list(recipe_failure_modes(meta) if failure_modes is None else failure_modes)
    failure_modes += observed_failure_modes(meta)
    mods = "\n".join(
        f"- `{x['name']}` ({x['kind']}, {x['bands']} band(s): {', '.join(x.get('band_names', []))}), "
        f"{'required' if x.get('required') else 'optional'}; normalisation `{x['normalization']}`; {x.get('description', '')}"
        for x in meta["modalities"])
    classes = ", ".join(f"{c['value']} {c['name']}" for c in meta["classes"])
    gsd = meta["gsd"]
    inputs = " and/or ".join(f"{x['kind']} ({x.get('description') or x['name']})" for x in meta["modalities"])
    text = f"""# {meta['name']} {meta['version']}

{meta['description']}

**Architecture:** {meta['architecture']} · **Licence:** {meta['license']} · **Attribution:** {meta['attribution']}

## Intended use
Semantic segmentation of the scenes described above from {inputs}
(any non-empty subset; missing modalities are passed as absent). Classes: {classes}.
Pixel size: {_pixel_size_text(gsd)}
Outputs class probabilities and one robustness map per modality (the share each input had in
the decision, summing to 1 over the inputs given).

## Input contract
{mods}

Tiles of {meta['tile_size']} px (multiple of {meta['size_multiple']}), overlap {meta['overlap']} px.
GSD: the network runs at {_runs_at(gsd)} (trained around {gsd['native']} m; the engine resamples layers into it).
{_HALF_STORAGE_NOTE if storage_of(meta.get('extra', {})) == HALF else ''}
## Training
{meta['training_data']}.
{m.get('steps', '?')} steps in {m.get('train_seconds', 0) / 60:.0f} CPU minutes on {m.get('threads', 1)} thread(s).
Recipe: `python -m modalseg.models.train --config training/<config>.json` (config and seed in the
package metadata, `extra.training_config`).

{_honest_sections(m, meta)}
## Accuracy on validation strips (IoU %, secondary: strips beside training pixels, used to choose the checkpoint)
Protocol: {m.get('protocol', '').rstrip('.')}.

{accuracy_table(m.get('validation', {}))}
{_LIDAR_GROUPS_NOTE if {"towns", "rgb_tiles"} & set(m.get('validation', {})) else ""}
## Known failure modes
""" + "\n".join(f"- {f}" for f in failure_modes) + "\n"
    path = Path(folder) / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
