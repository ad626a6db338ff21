"""``python -m modalseg models``: the bundled packages, their inputs and their measured accuracy."""
import argparse
from typing import Any

from ..processing_provider.paths import BUNDLED_MODELS_DIR, DEFAULT_BUNDLED_MODEL

NAME = "models"


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(NAME, help="list the bundled model packages and their inputs",
                                 description="Lists the model packages bundled with ModalSeg: name, version, "
                                             "network, inputs, classes, validation mIoU and, where the package "
                                             "has it, the accuracy on whole held-out areas (metrics.held_out).")
    parser.add_argument("--folder", default=str(BUNDLED_MODELS_DIR), help="folder of packages to list instead")
    parser.set_defaults(run=run)


def held_out_lines(meta: Any) -> list:
    """One line per input subset of ``metrics.held_out`` (contract: miou in percent, pixels)."""
    held_out = meta.metrics.get("held_out") or {}
    lines = []
    for subset, row in (held_out.get("subsets") or {}).items():
        if isinstance(row, dict) and isinstance(row.get("miou"), (int, float)):
            lines.append(f"    held-out {subset}: mIoU {row['miou']:.1f} % on {row.get('pixels', '?'):,} px")
    if lines and held_out.get("protocol"):
        lines.insert(0, f"    held-out protocol: {held_out['protocol']}")
    return lines


def run(args: argparse.Namespace, log=print) -> int:
    from ..engine import EngineError, list_packages
    from ..engine.model_choice import inputs_label, validation_label

    found = list_packages(args.folder)
    if not found:
        raise EngineError(f"no model package in '{args.folder}'")
    for path, meta in sorted(found, key=lambda item: item[1].name != DEFAULT_BUNDLED_MODEL):
        default = " (default on ties)" if meta.name == DEFAULT_BUNDLED_MODEL else ""
        log(f"{meta.name} {meta.version}{default}: {meta.architecture}, {path}")
        log(f"    inputs: {inputs_label(meta)}")
        for spec in meta.modalities:
            log(f"      {spec.name} ({spec.kind}, {'required' if spec.required else 'optional'}): "
                f"{', '.join(spec.band_names)}")
        log(f"    classes: {', '.join(f'{c.value} {c.name}' for c in meta.classes)}")
        log(f"    {validation_label(meta)}")
        for line in held_out_lines(meta):
            log(line)
    return 0
