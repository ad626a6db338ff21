"""The output rasters of one run: finished rows in, classes / robustness / probabilities / confidence out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from .blending import FinishedRows
from .grid import Grid
from .package import PackageMetadata
from .postprocess import clean_class_map
from .writers import GeoTiffWriter, class_nodata_value, float_writer


@dataclass(frozen=True)
class OutputPaths:
    classes: str
    robustness: Optional[str] = None
    probabilities: Optional[str] = None
    confidence: Optional[str] = None


class OutputSet:
    """Open writers for the requested outputs; nothing is visible until ``commit``."""

    def __init__(self, paths: OutputPaths, grid: Grid, meta: PackageMetadata, used: Sequence[str],
                 warn: Callable[[str], None]):
        self.values = np.array(meta.class_values, np.uint8)
        self.nodata = class_nodata_value(meta.classes)
        self.modality_count = len(meta.modalities)
        self.used_index = [meta.modality_names.index(m) for m in used]
        self.counts = np.zeros(256, np.int64)
        self.writers: Dict[str, GeoTiffWriter] = {}
        try:
            classes = GeoTiffWriter(paths.classes, grid, 1, np.uint8, self.nodata, ["class"])
            self.writers["classes"] = classes
            classes.set_classes(meta.classes, self.nodata)
            if paths.robustness and not meta.has_robustness:
                warn(f"model '{meta.name}' does not produce robustness maps; none written")
            elif paths.robustness:
                self.writers["robustness"] = float_writer(paths.robustness, grid, list(used))
            if paths.probabilities:
                self.writers["probabilities"] = float_writer(paths.probabilities, grid,
                                                             [c.name for c in meta.classes])
            if paths.confidence:
                self.writers["confidence"] = float_writer(paths.confidence, grid, ["confidence"])
        except Exception:
            self.abort()
            raise

    @property
    def folder(self):
        return self.writers["classes"].path.parent

    def write(self, rows: FinishedRows) -> None:
        valid = rows.valid
        invalid = ~valid
        classes = self.values[np.argmax(rows.scores, axis=0)]
        classes[invalid] = self.nodata
        self.writers["classes"].write(rows.y, classes, rows.x)
        self.counts += np.bincount(classes[valid], minlength=256)
        if "robustness" in self.writers:
            robustness = rows.robustness[self.used_index]
            robustness /= np.maximum(robustness.sum(axis=0, keepdims=True), 1e-12)
            robustness[:, invalid] = np.nan
            self.writers["robustness"].write(rows.y, robustness, rows.x)
        if "probabilities" in self.writers or "confidence" in self.writers:
            probabilities = rows.probabilities()
            probabilities[:, invalid] = np.nan
            if "probabilities" in self.writers:
                self.writers["probabilities"].write(rows.y, probabilities, rows.x)
            if "confidence" in self.writers:
                self.writers["confidence"].write(rows.y, probabilities.max(axis=0), rows.x)

    def clean_classes(self, smoothing_radius: int, min_pixels: int) -> None:
        """Rewrite the class map through ``clean_class_map`` (reads it whole)."""
        writer = self.writers["classes"]
        cleaned = clean_class_map(writer.read_band(1), self.nodata, smoothing_radius, min_pixels)
        writer.write(0, cleaned)
        self.counts = np.bincount(cleaned[cleaned != self.nodata], minlength=256)

    def commit(self, cloud_optimized: bool = False) -> Dict[str, str]:
        """Every file is finished before any is renamed into place: a failure leaves no output."""
        for writer in self.writers.values():
            writer.finish(cloud_optimized)
        return {name: writer.publish() for name, writer in self.writers.items()}

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()
