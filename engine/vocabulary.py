"""The engine's choice lists: one definition each, as ``(key, label)`` pairs in a fixed order.

The engine accepts the keys; the Processing enums and the dialogs show the labels. A Processing
enum stores the *position* of the choice (in ``.model3`` files, batch histories, scripts calling
``qgis_process``), so a position never changes meaning: new choices go at the end, none is
removed or reordered. Plain Python (no numpy, GDAL or qgis), so the plugin can build its
parameters before anything heavier loads.
"""
from __future__ import annotations

from typing import List, Tuple

from .errors import EngineError

Choices = Tuple[Tuple[str, str], ...]

DEVICES: Choices = (
    ("auto", "Auto (CUDA GPU when available, else CPU)"),
    ("cpu", "CPU"),
    ("cuda", "CUDA GPU"),
)
RUNTIMES: Choices = (
    ("onnx", "ONNX Runtime (needs onnxruntime)"),
    ("torch", "PyTorch (needs torch and the package's torch weights)"),
)
BLEND_WINDOWS: Choices = (
    ("hann", "Hann window (smooth, recommended)"),
    ("linear", "Linear ramp towards tile edges"),
    ("none", "None (uniform weights: plain average of overlapping tiles)"),
    ("crop", "Centre crop (each tile keeps only its centre: hard seams, for comparison)"),
)
# What the elevation layer holds; "auto" decides from a DTM given too, else from the values.
ELEVATION_TYPES: Choices = (
    ("auto", "Auto: a DSM when a DTM is given, else judged from the heights"),
    ("dsm", "DSM - heights above sea level (m); a DTM is estimated if none is given"),
    ("ndsm", "nDSM - heights above ground (m)"),
)
# Which graph of the package runs: its float32 graph, or a variant shipped beside it
# (``<name>.int8.onnx``, ``<name>.fp16.onnx``, written by ``models.quantize``).
PRECISIONS: Choices = (
    ("auto", "Auto: int8 on the CPU, fp16 on a CUDA GPU, when the package ships that graph; else fp32"),
    ("fp32", "fp32 (the package's float32 graph)"),
    ("int8", "int8 (the package's quantised graph: faster on CPUs, a small measured accuracy cost)"),
    ("fp16", "fp16 (the package's half-precision graph, for CUDA GPUs)"),
)
# The precisions a package may ship beside its fp32 graph (what models.quantize writes).
VARIANTS: Choices = tuple(choice for choice in PRECISIONS if choice[0] in ("int8", "fp16"))
# What the values of a SAR layer are; "auto" judges from them (engine.sar: linear power is >= 0
# with a long tail). SAR models take dB: linear power (and the intensity of complex samples) is
# converted.
SAR_SCALES: Choices = (
    ("auto", "Auto: linear power when every value is >= 0 with a long tail, else dB"),
    ("db", "dB (10 log10 of the backscatter intensity)"),
    ("linear", "Linear power (backscatter intensity, sigma0); converted to dB"),
)
# How the bands of the optical layer are laid out (engine.false_colour): true colour in the model's
# order, or a false-colour infrared image (NIR, red, green: IGN BD ORTHO IRC, ISPRS Vaihingen), whose
# red and green reach the model as red and green, blue estimated, NIR to a NIR input if the model has one.
OPTICAL_TYPES: Choices = (
    ("rgb", "True colour: the bands in the model's order (red, green, blue...)"),
    ("irc", "False-colour infrared (IRC): near-infrared, red, green; blue is estimated from green"),
)
# Ground filter window (metres) estimating the DTM of a DSM given without one: larger than most
# buildings' smaller side (engine.ground).
DEFAULT_GROUND_WINDOW_M = 40.0
# The fine-tuning algorithm (id, display name): engine warnings send the analyst to it, and
# processing_provider/algorithm_finetune.py takes both from here.
FINETUNE_ALGORITHM = ("finetune", "Fine-tune a model on your labels")


def keys(choices: Choices) -> Tuple[str, ...]:
    return tuple(key for key, _ in choices)


def labels(choices: Choices) -> List[str]:
    return [label for _, label in choices]


def key_at(choices: Choices, position: int) -> str:
    """The key of the choice a Processing enum stored as ``position``."""
    return choices[position][0]


def check_key(choices: Choices, key: str, what: str) -> str:
    """``key`` when it is one of ``choices``, else an ``EngineError`` naming the valid ones."""
    if key not in keys(choices):
        raise EngineError(f"{what} must be one of {', '.join(keys(choices))}, not '{key}'")
    return key
