"""The fine-tuned package's metadata: the base package's, with the new classes, the labelled
area's GSD, the validation scores and a record of how it was made (``extra.finetune``)."""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any, Dict, Optional, Sequence

from ...engine.binding import Source
from ...engine.package import ModelPackage
from .labels import LabelInput
from .options import FinetuneOptions
from .prepare import TrainingData
from .results import EpochReport


def _rounded(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(float(x), 4)


def new_metadata(package: ModelPackage, data: TrainingData, sources: Sequence[Source], labels: LabelInput,
                 options: FinetuneOptions, history: Sequence[EpochReport], start_miou: Optional[float],
                 best_val: Optional[float], best_epoch: int, stopped: str, seconds: float) -> Dict[str, Any]:
    """Metadata for ``models.export.export_package`` (graph-specific fields are left to it)."""
    meta = package.metadata
    d = json.loads(json.dumps(meta.to_dict()))  # tuples -> lists, as the metadata reader expects
    for key in ("presence_input", "has_robustness"):
        d.pop(key, None)  # export_package sets them from the network
    name = options.name or f"{meta.name}-finetuned"
    gsd = data.grid.gsd_metres()
    d.update({
        "name": name, "version": "1.0.0",
        "description": f"{meta.name} {meta.version} fine-tuned on local labels. " + meta.description,
        "training_data": f"{meta.training_data}; fine-tuned on "
                         f"{os.path.basename(labels.vector or labels.raster or '')}",
        "classes": [{"value": c.value, "name": c.name, "color": c.color} for c in data.classes],
        "gsd": {"native": gsd, "min": min(meta.gsd.min, gsd), "max": max(meta.gsd.max, gsd),
                "inputs": [min(meta.gsd.inputs[0], gsd), max(meta.gsd.inputs[1], gsd)]},
    })
    d["metrics"] = {
        "protocol": "fine-tuning validation: a spatially separate strip of the labelled area holding about "
                    f"{options.val_fraction:.0%} of the labelled pixels; mIoU over the classes it contains",
        "validation_miou": _rounded(best_val), "validation_miou_start": _rounded(start_miou),
        "base_metrics": meta.metrics,
    }
    extra = {k: v for k, v in meta.extra.items() if k != "torch"}
    extra["finetune"] = {
        "base_model": {"name": meta.name, "version": meta.version, "file": package.onnx_path.name},
        "layers": [s.describe() for s in sources],
        "labels": {"raster": labels.raster, "vector": labels.vector, "field": labels.class_field, "aoi": labels.aoi,
                   "mapping": dict(labels.mapping)},
        "label_pixels": {str(k): int(v) for k, v in data.label_counts.items()},
        "options": asdict(options),
        "epochs": len(history), "best_epoch": best_epoch, "stopped": stopped, "seconds": round(seconds, 1),
        "history": [{"epoch": h.epoch, "loss": round(h.loss, 4), "val_miou": _rounded(h.val_miou)} for h in history],
    }
    d["extra"] = extra
    return d
