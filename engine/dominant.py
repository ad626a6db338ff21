"""The dominant-modality output: which input leads the decision at each pixel, and by how much.

The robustness shares (one band per modality) say everything but no legend can name a mix of
bands. This output turns them into categories a legend can name: value ``1 + k * BINS + b`` means
"modality k leads, its share in step b", where the lead's share, from an even split (1/K of K
modalities) to 1, is cut into ``BINS`` equal steps. Each modality has a hue (the first three are
red, green and blue, as in the robustness composite's channels) that deepens with the share, so a
paletted legend reads "ndsm: share 0.75-0.80" beside its colour. 0 is nodata.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from .errors import EngineError
from .package import ClassInfo

BINS = 10
NODATA = 0
# One hue per modality, in the robustness bands' order: red, green, blue like the composite's
# channels, then purple, orange, brown, pink, grey.
HUES = ("#e41a1c", "#4daf4a", "#377eb8", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#999999")
_PALEST = 0.2  # a weak lead keeps this much of its hue (the rest white), so it still reads as that modality


def _max_modalities() -> int:
    return (255 - 1) // BINS


def code(modality, step):
    """Category value of (modality index, share step); works on arrays too."""
    return 1 + modality * BINS + step


def decode(value: int) -> Tuple[int, int]:
    """(modality index, share step) of a category value other than NODATA."""
    return (value - 1) // BINS, (value - 1) % BINS


def share_range(step: int, modalities: int) -> Tuple[float, float]:
    """The lead's share covered by ``step`` when ``modalities`` share the decision."""
    even = 1.0 / modalities
    width = (1.0 - even) / BINS
    return even + step * width, even + (step + 1) * width


def colour(modality: int, strength: float) -> str:
    """``#rrggbb`` of ``modality``'s hue at ``strength`` (0 = palest, 1 = full hue)."""
    hue = HUES[modality % len(HUES)]
    keep = _PALEST + (1.0 - _PALEST) * min(max(strength, 0.0), 1.0)
    channels = (int(hue[i:i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(255 - (255 - c) * keep):02x}" for c in channels)


def categories(modalities: Sequence[str]) -> List[ClassInfo]:
    """Every (modality, step) category with its name and colour (the step's place on the hue's ramp)."""
    if len(modalities) > _max_modalities():
        raise EngineError(f"a dominant-modality map holds at most {_max_modalities()} modalities; the model "
                          f"uses {len(modalities)}")
    if len(modalities) == 1:  # one input leads everywhere with share 1: one category
        return [ClassInfo(code(0, BINS - 1), f"{modalities[0]}: share 1 (only input)", colour(0, 1.0))]
    found = []
    for k, name in enumerate(modalities):
        for step in range(BINS):
            low, high = share_range(step, len(modalities))
            found.append(ClassInfo(code(k, step), f"{name}: share {low:.2f}-{high:.2f}",
                                   colour(k, (step + 1) / BINS)))
    return found


def dominant_codes(shares: np.ndarray) -> np.ndarray:
    """uint8 category of each pixel from its shares (modalities x h x w, summing to 1)."""
    modalities = shares.shape[0]
    lead = np.argmax(shares, axis=0)
    if modalities == 1:
        step = np.full(lead.shape, BINS - 1)
    else:
        even = 1.0 / modalities
        strength = (np.max(shares, axis=0) - even) / (1.0 - even)
        step = np.clip(np.floor(strength * BINS), 0, BINS - 1).astype(np.int64)
    return code(lead, step).astype(np.uint8)
