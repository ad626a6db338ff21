"""From LAS point classes to a model package's classes: the default table, parsing an edited one,
and resolving its targets against the package.

A row maps one LAS classification code to a target: a class of the package (its value, its name or
one part of a name such as ``ground`` for ``ground / impervious``), ``ignore`` (the point counts for
the heights but leaves its cell unlabelled) or ``exclude`` (the point is used for nothing: noise,
artefacts, synthetic points). Codes in no row are ignored and listed in the log.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import WARNING_PREFIX, EngineError
from ..package import ClassInfo

IGNORE = "ignore"
EXCLUDE = "exclude"
CODE_COUNT = 256  # LAS 1.4 classification is one byte

# (code, target, what the code means). ASPRS LAS 1.4 R15 table 17, then IGN LiDAR HD's own codes.
DEFAULT_CLASS_MAPPING: Tuple[Tuple[int, str, str], ...] = (
    (0, IGNORE, "created, never classified"),
    (1, IGNORE, "unclassified"),
    (2, "ground", "ground"),
    (3, "low vegetation", "low vegetation"),
    (4, "tree", "medium vegetation"),
    (5, "tree", "high vegetation"),
    (6, "building", "building"),
    (7, EXCLUDE, "low point (noise)"),
    (9, "water", "water"),
    (10, "ground", "rail"),
    (11, "ground", "road surface"),
    (13, "other", "wire - guard (shield)"),
    (14, "other", "wire - conductor (phase)"),
    (15, "other", "transmission tower"),
    (16, "other", "wire-structure connector"),
    (17, "other", "bridge deck"),
    (18, EXCLUDE, "high noise"),
    (64, "other", "IGN LiDAR HD: permanent above-ground structure"),
    (65, EXCLUDE, "IGN LiDAR HD: artefact"),
    (66, EXCLUDE, "IGN LiDAR HD: virtual point"),
    (67, "other", "IGN LiDAR HD: miscellaneous building"),
)
CODE_MEANINGS: Dict[int, str] = {code: meaning for code, _, meaning in DEFAULT_CLASS_MAPPING}
# The bare-earth returns the DTM is made of (ASPRS ground and water), whatever the labels say.
TERRAIN_CODES = (2, 9)


def default_rows() -> List[Tuple[int, str]]:
    return [(code, target) for code, target, _ in DEFAULT_CLASS_MAPPING]


def parse_rows(flat: Sequence[object]) -> List[Tuple[int, str]]:
    """A Processing matrix value (code, target, code, target, ...) as rows; bad entries raise."""
    if len(flat) % 2:
        raise EngineError("the class mapping table must have two columns: LAS code and class")
    rows = []
    for code, target in zip(flat[0::2], flat[1::2]):
        text = str(code).strip()
        try:
            value = int(float(text))
        except ValueError:
            raise EngineError(f"class mapping: '{text}' is not a LAS class code (a number from 0 to 255)") from None
        if not 0 <= value < CODE_COUNT or value != float(text):
            raise EngineError(f"class mapping: '{text}' is not a LAS class code (a number from 0 to 255)")
        rows.append((value, str(target).strip()))
    return rows


def _class_for(target: str, classes: Sequence[ClassInfo]) -> Optional[ClassInfo]:
    """The class a target names: its value, its full name or one '/'-separated part of it."""
    wanted = target.strip().lower()
    for info in classes:
        names = [info.name.lower()] + [part.strip().lower() for part in info.name.split("/")]
        if wanted == str(info.value) or wanted in names:
            return info
    return None


@dataclass(frozen=True)
class ClassMapping:
    """Lookup tables indexed by LAS code: the label value (the package's nodata for ignored codes)
    and whether the point is used at all."""

    labels: np.ndarray      # uint8[256]
    used: np.ndarray        # bool[256]
    mapped: np.ndarray      # bool[256]: the code has a row (others are reported as unknown)
    nodata: int

    def describe(self, code: int, classes: Sequence[ClassInfo]) -> str:
        names = {c.value: c.name for c in classes}
        if not self.used[code]:
            return EXCLUDE
        return names.get(int(self.labels[code]), IGNORE)


def resolve_mapping(rows: Iterable[Tuple[int, str]], classes: Sequence[ClassInfo], nodata: int,
                    warn=lambda text: None) -> ClassMapping:
    """Lookup tables for ``rows`` against the package's ``classes``; a target the package lacks is
    ignored with a warning (a package without 'water' cannot label water)."""
    labels = np.full(CODE_COUNT, nodata, np.uint8)
    used = np.ones(CODE_COUNT, bool)
    mapped = np.zeros(CODE_COUNT, bool)
    for code, target in rows:
        mapped[code] = True
        if target.lower() == EXCLUDE:
            used[code] = False
        elif target.lower() != IGNORE:
            info = _class_for(target, classes)
            if info is None:
                names = ", ".join(c.name for c in classes)
                warn(WARNING_PREFIX + f"class mapping: LAS code {code} -> '{target}', which is no class of the package "
                     f"({names}); those points are left unlabelled")
            else:
                labels[code] = info.value
    return ClassMapping(labels, used, mapped, nodata)
