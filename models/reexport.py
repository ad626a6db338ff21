"""Export a package again from its own torch weights: the same network and metadata, the graph of
the current network code.

    python -m modalseg.models.reexport --package resources/models/modalseg-sgma-urban

For changes to how the network code writes the same arithmetic (e.g. ``nn.common.softmax_over``,
which ONNX Runtime runs far faster than a Softmax over a middle axis): the weights, the metadata and
its figures stay, the graph and its checksum change. The export checks the new graph against torch
(``export.export_package``); the card is written again. Precision variants record the old graph's
checksum, so they are removed with the old graph: make them again with ``models.quantize``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Optional

from ..engine.package import load_package
from .card import write_card
from .export import export_package
from .networks.registry import load_network
from .weight_storage import storage_of


def reexport_package(folder: "str | Path") -> Path:
    """Write the package at ``folder`` again from its weights (in place); return its new graph."""
    package = load_package(folder)
    meta = json.loads(package.onnx_path.with_suffix(".json").read_text(encoding="utf-8"))  # as written
    recipe = meta["extra"]["torch"]
    net = load_network(package)
    onnx_path = export_package(net, meta, package.folder, architecture=recipe["architecture"],
                               config=recipe["config"], file_name=package.onnx_path.stem,
                               weight_storage=storage_of(meta["extra"]))
    write_card(package.folder, meta)
    return onnx_path


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", required=True, action="append", help="package folder (repeatable)")
    for folder in ap.parse_args(argv).package:
        print(f"wrote {reexport_package(folder)}")


if __name__ == "__main__":
    main()
