"""Model card (README.md beside a package) written from the package's own metadata."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence

CLASS_KEYS = ["ground", "building", "low_vegetation", "tree", "water", "other"]


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def accuracy_table(validation: Dict[str, Any]) -> str:
    rows = ["| group | subset | " + " | ".join(CLASS_KEYS) + " | mIoU (g, b, lv, t) |",
            "|---|---|" + "---|" * (len(CLASS_KEYS) + 1)]
    for group, r in validation.items():
        for subset, v in r["subsets"].items():
            rows.append(f"| {group} | {subset} | " + " | ".join(_pct(v["iou"].get(c)) for c in CLASS_KEYS)
                        + f" | **{_pct(v['miou'])}** |")
        rows.append(f"| {group} | Average / Top-1 / Last-1 | " + " | " * (len(CLASS_KEYS) - 1)
                    + f" | {_pct(r['average'])} / {_pct(r['top1'])} / {_pct(r['last1'])} |")
    return "\n".join(rows)


def write_card(folder: "str | Path", meta: Dict[str, Any], failure_modes: Sequence[str] = ()) -> Path:
    """Write ``README.md`` into a package folder; every figure comes from ``meta``."""
    m = meta["metrics"]
    mods = "\n".join(
        f"- `{x['name']}` ({x['kind']}, {x['bands']} band(s): {', '.join(x.get('band_names', []))}), "
        f"{'required' if x.get('required') else 'optional'}; normalisation `{x['normalization']}`; {x.get('description', '')}"
        for x in meta["modalities"])
    classes = ", ".join(f"{c['value']} {c['name']}" for c in meta["classes"])
    gsd = meta["gsd"]
    text = f"""# {meta['name']} {meta['version']}

{meta['description']}

**Architecture:** {meta['architecture']} · **Licence:** {meta['license']} · **Attribution:** {meta['attribution']}

## Intended use
Semantic segmentation of urban and peri-urban scenes from an RGB orthophoto and/or an nDSM
(any non-empty subset; missing modalities are passed as absent). Classes: {classes}.
Outputs class probabilities and one robustness map per modality (the share each input had in
the decision, summing to 1 over the inputs given).

## Input contract
{mods}

Tiles of {meta['tile_size']} px (multiple of {meta['size_multiple']}), overlap {meta['overlap']} px.
GSD: trained around {gsd['native']} m, valid {gsd['min']}–{gsd['max']} m (the engine resamples outside it).

## Training
{meta['training_data']}.
{m.get('steps', '?')} steps in {m.get('train_seconds', 0) / 60:.0f} CPU minutes on {m.get('threads', 1)} thread(s).
Recipe: `python -m modalseg.models.train --config training/<config>.json` (config and seed in the
package metadata, `extra.training_config`).

## Accuracy (IoU %, validation areas kept out of training)
Protocol: {m.get('protocol', '')}.

{accuracy_table(m.get('validation', {}))}

`towns`: lidarhd_elevation tiles (nDSM only); `rgb_tiles`: lidarhd_houses + lidarhd_fields. Labels are
IGN production classifications (some errors); the houses tile has no vegetation labels. Small strips:
read single-class IoUs with care.

## Known failure modes
""" + "\n".join(f"- {f}" for f in failure_modes) + "\n"
    path = Path(folder) / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
