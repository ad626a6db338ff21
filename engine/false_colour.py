"""False-colour infrared (IRC) optical layers: near-infrared, red, green, as IGN BD ORTHO IRC and
ISPRS Vaihingen deliver them, read as what they are instead of NIR taken for red.

A true-colour model (optical input red, green, blue) gets the layer's red and green where they
belong and, for the blue an IRC image does not have, its green band again: on every RGB orthophoto
the bundled models trained on, blue follows green closely (correlation 0.96-0.998, measured by
``benchmarks/false_colour``) and a copy needs no fitted constant, so it holds in any units. NIR goes
to the model's NIR input when it has one. Feeding the layer as RGB instead (NIR as red) is what an
undeclared IRC layer gets: ``benchmarks/false_colour`` measures both on the held-out area, which
has an RGB and an IRC image of the same ground.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .errors import EngineError

IRC_BAND_NAMES = ("near-infrared", "red", "green")  # the layout of an IRC layer, band by band
TRUE_COLOUR = ("red", "green", "blue")  # the optical input an IRC layer can feed
NIR_POSITION, RED_GREEN_POSITIONS = 0, (1, 2)  # in IRC_BAND_NAMES


def irc_bands(path: str, count: int, chosen: Optional[Sequence[int]]) -> Tuple[int, int, int]:
    """The layer's band numbers holding NIR, red and green: the chosen ones (in that order), else 1, 2, 3."""
    bands = tuple(int(b) for b in chosen) if chosen else (1, 2, 3)
    if len(bands) != len(IRC_BAND_NAMES):
        raise EngineError(f"the false-colour infrared layer '{path}' was given {len(bands)} band(s) "
                          f"({','.join(map(str, bands))}); give 3, in the order {', '.join(IRC_BAND_NAMES)}")
    bad = [b for b in bands if not 1 <= b <= count]
    if bad:
        raise EngineError(f"the false-colour infrared layer '{path}' has {count} band(s); band(s) "
                          f"{', '.join(map(str, bad))} do not exist")
    return bands  # type: ignore[return-value]


def check_true_colour(band_names: Sequence[str], model: str, path: str) -> None:
    """A false-colour layer can feed only a red, green, blue input: say so for any other."""
    if tuple(band_names) != TRUE_COLOUR:
        raise EngineError(f"model '{model}' takes optical bands {', '.join(band_names)}; the false-colour infrared "
                          f"layer '{path}' has {', '.join(IRC_BAND_NAMES)} and can feed only a red, green, blue input: "
                          "give the optical type 'true colour' with the bands in the model's order")


def with_estimated_blue(red_green: np.ndarray) -> np.ndarray:
    """Red and green bands (2 x H x W) as red, green, blue: blue is a copy of green."""
    return np.concatenate([red_green, red_green[1:2]], axis=0)
