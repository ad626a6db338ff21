"""Which graph of a package runs: its fp32 graph or a precision variant shipped beside it.

``None`` runs the graph the package was loaded from, as it is (what every engine caller gets by
default, so figures measured on a package stay that graph's); *auto* takes the int8 graph on the CPU and the fp16 graph on a CUDA GPU when the package ships
them (and they validate), else fp32; an explicit precision runs that graph wherever the session
lands, or stops with the reason. Plain Python over ``engine.package``: the runtime calls it once per
session it opens, and tests call it with any device without needing one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from .errors import EngineError
from .package import FLOAT_PRECISION, ModelPackage, PackageError, load_variant
from .vocabulary import PRECISIONS, check_key

PREFERRED_VARIANT = {False: "int8", True: "fp16"}  # on_gpu -> what auto takes when shipped


@dataclass(frozen=True)
class GraphChoice:
    package: ModelPackage  # onnx_path is the graph that runs; metadata is that graph's
    precision: str
    reason: str

    def describe(self) -> str:
        return f"{self.precision} graph '{self.package.onnx_path.name}' ({self.reason})"


def choose_graph(package: ModelPackage, requested: Optional[str], on_gpu: bool,
                 warn: Callable[[str], None]) -> GraphChoice:
    """The graph to run for ``requested`` (a key of ``PRECISIONS``, or None) on a GPU or a CPU session."""
    if requested is None:
        return GraphChoice(package, package.precision, "the package's graph as loaded")
    check_key(PRECISIONS, requested, "precision")
    device = "GPU" if on_gpu else "CPU"
    if package.precision != FLOAT_PRECISION:  # the user pointed at a variant file itself
        if requested not in ("auto", package.precision):
            raise EngineError(f"model file '{package.onnx_path.name}' is the {package.precision} graph; to run "
                              f"precision {requested}, give the package folder or its fp32 .onnx file")
        return GraphChoice(package, package.precision, "the model file given")
    if requested == FLOAT_PRECISION:
        return GraphChoice(package, FLOAT_PRECISION, "as requested")
    if requested != "auto":
        try:
            variant = load_variant(package, requested)
        except PackageError as exc:
            raise EngineError(str(exc)) from None
        if requested == "fp16" and not on_gpu:
            warn("the fp16 graph runs on the CPU here, usually slower than fp32: fp16 is meant for CUDA GPUs")
        return GraphChoice(variant, requested, "as requested")
    preferred = PREFERRED_VARIANT[on_gpu]
    if preferred not in package.variants:
        return GraphChoice(package, FLOAT_PRECISION, f"auto: the package ships no {preferred} graph for the {device}")
    try:
        variant = load_variant(package, preferred)
    except PackageError as exc:
        warn(f"the package's {preferred} graph cannot be used ({exc}); running its fp32 graph")
        return GraphChoice(package, FLOAT_PRECISION, f"auto: its {preferred} graph is unusable")
    return GraphChoice(variant, preferred, f"auto: the package ships it for the {device}")
