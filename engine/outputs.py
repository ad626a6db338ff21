"""The output rasters of one run: finished rows in, classes / robustness / probabilities / confidence /
dominant modality out."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import dominant
from .blending import FinishedRows, divide_by_band_sum
from .errors import EngineError
from .grid import Grid
from .package import PackageMetadata
from .postprocess import clean_class_map
from .writers import FLOAT_NODATA, GeoTiffWriter, class_nodata_value, float_writer, folder_problem, os_cause


@dataclass(frozen=True)
class OutputPaths:
    classes: str
    robustness: Optional[str] = None
    probabilities: Optional[str] = None
    confidence: Optional[str] = None
    dominant: Optional[str] = None  # engine.dominant: which modality leads, by how much

    def named(self) -> List[Tuple[str, str]]:
        """(output, path) for every requested output."""
        return [(name, path) for name, path in (("classes", self.classes), ("robustness", self.robustness),
                                                ("probabilities", self.probabilities),
                                                ("confidence", self.confidence),
                                                ("dominant modality", self.dominant)) if path]


def _same_file(a: str, b: str) -> bool:
    """Same file once links are resolved (symbolic via realpath, hard links via samefile)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet: then realpath decided
        return False


def check_outputs(outputs: OutputPaths, inputs: Iterable[str]) -> None:
    """Refuse, before anything is read, outputs that would overwrite an input or each other, and
    outputs that are folders."""
    named = outputs.named()
    for name, path in named:
        if os.path.isdir(path):
            raise EngineError(f"the {name} output '{path}' is a folder; give it a file name (.tif)")
        for source in inputs:
            if source and _same_file(path, source):
                raise EngineError(f"the {name} output '{path}' is the input layer '{source}'; writing it would "
                                  "destroy that input, so choose another output file")
    for i, (name, path) in enumerate(named):
        for other_name, other in named[i + 1:]:
            if _same_file(path, other):
                raise EngineError(f"the {name} and {other_name} outputs are the same file '{path}'; give each "
                                  "output its own file")


def check_output_folders(outputs: OutputPaths) -> None:
    """Every output folder exists and takes new files (checked before anything is read)."""
    for _, path in outputs.named():
        folder = Path(os.path.abspath(path)).parent
        problem = folder_problem(folder)
        if problem:
            raise EngineError(f"cannot write into '{folder}': {problem}")


def create_output_folders(outputs: OutputPaths) -> List[Path]:
    """Create the outputs' missing folders (as Processing users expect); returns those created,
    deepest last, for ``remove_created_folders`` after a failed run."""
    created: List[Path] = []
    for _, path in outputs.named():
        folder = Path(os.path.abspath(path)).parent
        missing = [part for part in reversed([folder, *folder.parents]) if not part.exists()]
        try:
            for part in missing:
                part.mkdir()
                created.append(part)
            problem = folder_problem(folder)
        except OSError as exc:
            problem = folder_problem(folder) if isinstance(exc, NotADirectoryError) else os_cause(exc)
        if problem:
            remove_created_folders(created)
            raise EngineError(f"cannot write into '{folder}': {problem}")
    return created


def remove_created_folders(folders: Sequence[Path]) -> None:
    """Remove folders ``create_output_folders`` made, when they stayed empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty (or gone): leave it


class OutputSet:
    """Open writers for the requested outputs; nothing is visible until ``commit``."""

    def __init__(self, paths: OutputPaths, grid: Grid, meta: PackageMetadata, used: Sequence[str],
                 warn: Callable[[str], None], scratch: bool = False):
        """``scratch``: files read back by the run itself (the network grid's probabilities): their float
        bands hold 0 where no tile landed and carry no nodata value, so GDAL warps them with its fast
        kernel (a source nodata value makes it take the general one: 2.5 times slower on 6 bands)."""
        self.scratch = scratch
        self.float_fill = 0.0 if scratch else FLOAT_NODATA
        float_nodata = None if scratch else FLOAT_NODATA
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
            if (paths.robustness or paths.dominant) and not meta.has_robustness:
                warn(f"model '{meta.name}' does not produce robustness maps; no robustness or dominant-modality "
                     "map written")
            elif paths.robustness:
                self.writers["robustness"] = float_writer(paths.robustness, grid, list(used), float_nodata)
            if paths.dominant and meta.has_robustness:
                leads = GeoTiffWriter(paths.dominant, grid, 1, np.uint8, dominant.NODATA, ["dominant modality"])
                self.writers["dominant"] = leads
                leads.set_classes(dominant.categories(list(used)), dominant.NODATA)
            if paths.probabilities:
                self.writers["probabilities"] = float_writer(paths.probabilities, grid,
                                                             [c.name for c in meta.classes], float_nodata)
            if paths.confidence:
                self.writers["confidence"] = float_writer(paths.confidence, grid, ["confidence"], float_nodata)
        except Exception:
            self.abort()
            raise

    @property
    def needs_robustness(self) -> bool:
        """Whether an output is derived from the robustness shares."""
        return "robustness" in self.writers or "dominant" in self.writers

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
        if self.needs_robustness:
            robustness = divide_by_band_sum(rows.robustness[self.used_index])
            if "dominant" in self.writers:
                leads = dominant.dominant_codes(robustness)
                leads[invalid] = dominant.NODATA
                self.writers["dominant"].write(rows.y, leads, rows.x)
            if "robustness" in self.writers:
                robustness[:, invalid] = self.float_fill
                self.writers["robustness"].write(rows.y, robustness, rows.x)
        if "probabilities" in self.writers or "confidence" in self.writers:
            probabilities = rows.probabilities()
            probabilities[:, invalid] = self.float_fill
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
