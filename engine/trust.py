"""When a result of ``segment`` cannot be trusted, say so: the held-out accuracy of the modality
subset in use (``metrics.held_out`` of the package, written by ``models.held_out``), a pixel size
far outside the package's range, and a class map that is almost one class over an input that is not.

Each check gives the analyst one sentence and the way out: fine-tuning on a few polygons of their
own area (the fine-tune algorithm, named as the Processing toolbox shows it).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np
from scipy import ndimage

from .package import PackageMetadata
from .vocabulary import FINETUNE_ALGORITHM

LOW_HELD_OUT_MIOU = 50.0  # percent: below this the model is not fit for the subset in use
GSD_FACTOR = 2.0  # a pixel size more than this factor outside the package's range is warned about
DOMINANT_SHARE = 0.95  # one class on more than this share of the map makes it degenerate ...
TEXTURED_SHARE = 0.10  # ... when at least this share of an input's pixels is textured:
# local (3 x 3) standard deviation above a quarter of a training standard deviation (``meanstd``
# recipes), or above 1/16 of the normalised 0-1 range (``minmax`` / ``percentile``, which span
# about four standard deviations). Flat ground, water or an empty nDSM stay below it.
TEXTURE_STD = {"meanstd": 0.25, "minmax": 0.25 / 4, "percentile": 0.25 / 4}
TEXTURE_EVERY = 4  # one tile in this many is measured: a share needs a sample (27 ms per 512² tile, loaded CPU)

FINETUNE_HINT = (f"fine-tune it on a few polygons of your area with '{FINETUNE_ALGORITHM[1]}' "
                 f"(modalseg:{FINETUNE_ALGORITHM[0]})")


def _subset_name(used: Sequence[str]) -> str:
    return f"{used[0]}-only" if len(used) == 1 else " + ".join(used)


def report_held_out_accuracy(meta: PackageMetadata, used: Sequence[str], log: Callable[[str], None],
                             warn: Callable[[str], None], false_colour: bool = False) -> Optional[float]:
    """Log the held-out mIoU of the modality subset ``used`` (package order); warn when it is low.
    With ``false_colour`` (the optical layer is a false-colour infrared image) the figure is the one
    measured from such an image (``metrics.false_colour``, ``benchmarks/false_colour``), when stated.
    Returns the figure (percent), or None when the package states none for this subset."""
    what = _subset_name(used)
    stated = (meta.metrics.get("false_colour") or {}).get("subsets", {}) if false_colour else {}
    if false_colour and "+".join(used) in stated:
        figure, source = stated["+".join(used)], "from a false-colour infrared image of a whole held-out area"
        what = f"{what} (false-colour optical)"
    else:
        if false_colour:
            log(f"model '{meta.name}' states no held-out accuracy for a false-colour infrared optical layer: the "
                "figure below was measured on true-colour images, and a false-colour one scores less")
        figure = ((meta.metrics.get("held_out") or {}).get("subsets", {})).get("+".join(used)) or {}
        source = "of whole held-out areas"
    miou = figure.get("miou")
    if miou is None:
        log(f"model '{meta.name}' states no held-out accuracy for {what} input; its figures on areas it was "
            "trained near (model card) overstate what to expect elsewhere")
        return None
    log(f"held-out accuracy of model '{meta.name}' with {what} input: mIoU {miou:.1f} % on "
        f"{figure.get('pixels', 0):,} labelled pixels {source} (how they were chosen, and what "
        "the model saw of them: the model card)")
    if miou < LOW_HELD_OUT_MIOU:
        warn(f"{what} accuracy of this model is low ({miou:.1f} % mIoU on held-out areas); {FINETUNE_HINT}")
    return float(miou)


def pixel_size_warning(gsd: float, meta: PackageMetadata) -> Optional[str]:
    """A sentence when ``gsd`` (metres) is more than ``GSD_FACTOR`` times outside the pixel sizes of the
    layers the package was trained from (``gsd.inputs``)."""
    trained_low, trained_high = meta.gsd.inputs
    low, high = trained_low / GSD_FACTOR, trained_high * GSD_FACTOR
    if low <= gsd <= high:
        return None
    side = "finer" if gsd < low else "coarser"
    return (f"the pixel size ({gsd:.3g} m) is more than {GSD_FACTOR:g} times {side} than the range model "
            f"'{meta.name}' was trained for ({trained_low:g}–{trained_high:g} m): resampling cannot make the "
            f"scene look like its training data, so expect a poor class map; use imagery nearer that range or "
            f"{FINETUNE_HINT}")


class TextureMeter:
    """Counts, per modality, the valid pixels read and those with local variation (``TEXTURE_STD``),
    on a sample of the normalised tiles the network gets; fed by the reader thread only."""

    def __init__(self, meta: PackageMetadata):
        self.limits = {m.name: TEXTURE_STD.get(m.normalization.type, TEXTURE_STD["meanstd"])
                       for m in meta.modalities}
        self.valid: Dict[str, int] = {name: 0 for name in self.limits}
        self.textured: Dict[str, int] = {name: 0 for name in self.limits}
        self.seen: Dict[str, int] = {name: 0 for name in self.limits}

    def add(self, name: str, normalised: np.ndarray, valid: np.ndarray) -> None:
        """``normalised``: bands x h x w; the local standard deviation of the band mean is measured
        where the whole 3 x 3 window is valid (nodata edges are not texture); one tile in
        ``TEXTURE_EVERY`` is measured, the first always."""
        self.seen[name] += 1
        if (self.seen[name] - 1) % TEXTURE_EVERY:
            return
        inner = ndimage.binary_erosion(valid, np.ones((3, 3), bool))
        count = int(inner.sum())
        if not count:
            return
        x = normalised.mean(axis=0, dtype=np.float32)
        mean = ndimage.uniform_filter(x, 3)
        variance = ndimage.uniform_filter(x * x, 3) - mean * mean
        self.valid[name] += count
        self.textured[name] += int((variance[inner] > self.limits[name] ** 2).sum())

    def textured_share(self) -> Dict[str, float]:
        return {name: self.textured[name] / self.valid[name] for name in self.valid if self.valid[name]}


def degenerate_map_warning(counts: np.ndarray, meta: PackageMetadata, texture: TextureMeter) -> Optional[str]:
    """A sentence when one class covers more than ``DOMINANT_SHARE`` of the map (``counts``: pixels per
    class value, counted while the map was written) although an input is textured."""
    total = int(counts.sum())
    if not total:
        return None
    value = int(np.argmax(counts))
    share = counts[value] / total
    textured = {name: s for name, s in texture.textured_share().items() if s >= TEXTURED_SHARE}
    if share <= DOMINANT_SHARE or not textured:
        return None
    name = next((c.name for c in meta.classes if c.value == value), str(value))
    inputs = ", ".join(f"{m} {100 * s:.0f} %" for m, s in textured.items())
    return (f"the class map is degenerate: {100 * share:.1f} % of its pixels are '{name}' although the input "
            f"varies from pixel to pixel (textured pixels: {inputs}); the model probably does not fit this "
            f"imagery (another sensor, season, band order or pixel size); {FINETUNE_HINT}")
