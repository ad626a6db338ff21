"""Parameter counts and CPU latency of the five seed networks and of every bundled package.

    python -m benchmarks.model_zoo [--quick] [--sizes 256 512] [--repeats 5] [--threads 2] [--max-seconds 4]

Each seed network is built twice: at the paper's widths / backbone (as close as ModalSeg's parts
allow; the notes under the table say what differs) and at ModalSeg's defaults (the ``DEFAULTS`` of
``models/networks/<name>.py``, optical 3 bands + one 1-band modality, 6 classes). Both get their
parameter count (total and trainable) next to the paper's figure where one exists, are exported
to a temporary package with ``models.export.export_package`` (the path every package takes, ONNX
parity check included) and timed per tile of batch 1 with ONNX Runtime (the engine's CPU runner)
and torch (eval, ``no_grad``), ``--repeats`` runs after one warm-up, the runtimes alternated
because a shared CPU drifts between minutes. A runtime whose warm-up takes longer than
``--max-seconds`` is not timed at that size nor at larger ones ("skipped: > N s"); parameters are
always counted. Bundled packages are timed from their own ONNX graph, their int8 graph when they ship
one (column "ORT int8") and their torch weights.

``--quick``: a smoke run (64 px tiles, one run, paper widths counted but not timed).
Figures, not assertions.
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .common import REPO_ROOT, expose_plugin_package

expose_plugin_package()
# Idle OpenMP threads sleep instead of spinning, as the engine sets ONNX Runtime's threads: on a
# busy CPU, spinning torch threads ran the same tiles up to 10x slower (measured on 2 shared cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from modalseg.engine.package import list_packages, load_package  # noqa: E402
from modalseg.engine.runtime import make_runner  # noqa: E402
from modalseg.models.export import CLASSES, PRESENCE_INPUT, base_metadata, export_package  # noqa: E402
from modalseg.models.networks.registry import build_network, load_network  # noqa: E402

BUNDLED = REPO_ROOT / "resources" / "models"


@dataclass(frozen=True)
class ZooEntry:
    """One network configuration of the table, and the paper's figure it is compared with."""

    network: str                 # display name
    architecture: str            # registry key
    variant: str                 # "paper" or "ModalSeg"
    modalities: Dict[str, int]   # name (an engine modality kind) -> bands
    num_classes: int
    config: Dict[str, Any]
    paper: str = "-"             # the paper's figure, as published
    note: str = ""               # what differs from the paper


ZOO: Tuple[ZooEntry, ...] = (
    ZooEntry("AMMNet", "ammnet", "paper", {"optical": 3, "dsm": 1}, 6,
             {"widths": [64, 128, 256, 512], "depths": [2, 2, 2, 2], "aux_widths": [16, 32, 64, 128],
              "aux_depths": [1, 1, 1, 1], "decoder_channels": 256},
             "none published",
             "only the abstract is known: ResNet-18-sized optical encoder (basic blocks 64-512, 2/2/2/2), "
             "quarter-width DSM encoder, UPerHead 256 (the placeholder design of models/networks/ammnet.py)"),
    ZooEntry("EMSNet", "emsnet", "paper", {"optical": 3, "dsm": 1}, 6,
             {"widths": [64, 64, 128, 256, 256]},
             "15.26 M total",
             "the code's widths 64/64/128/256/256; paper-form SA-Gates everywhere instead of the code's "
             "SK-style gate, BatchNorm in the restore blocks"),
    ZooEntry("ASANet", "asanet", "paper", {"optical": 3, "sar": 3}, 6,
             {"widths": [96, 192, 384, 768], "depths": [3, 3, 9, 3], "decoder_channels": 256,
              "aux_channels": 128},
             "82 M total",
             "ConvNeXt-V2-T widths and depths (96-768, 3/3/9/3) but ModalSeg's residual basic blocks "
             "(two dense 3x3 convs) instead of ConvNeXt-V2 blocks (depth-wise 7x7 + MLP): the two encoders "
             "are far larger than 2 x 28 M; UPerHead 256, FCN aux head 128, PIE-RGB-SAR's 6 classes"),
    ZooEntry("MoBaNet", "mobanet", "paper", {"optical": 3, "dsm": 3}, 6,
             {"vit_dim": 768, "vit_depth": 12, "vit_heads": 12, "patch": 16, "taps": [2, 5, 8, 11],
              "proj_dim": 256, "decoder_channels": 64, "aux_channels": 256},
             "6,179,456 trainable",
             "frozen ViT-B shape (768, 12 blocks, 12 heads, taps 2/5/8/11) without weights, patch 16 "
             "instead of DINOv2's 14 (ModalSeg needs a patch dividing 32), PEG conv instead of a "
             "positional table; DSM replicated to 3 bands as in the code; trainable parts below"),
    ZooEntry("SGMA", "sgma", "paper", {"optical": 3, "ndsm": 1, "nir": 1}, 5,
             {"backbone_widths": [64, 128, 320, 512], "backbone_depths": [3, 4, 6, 3], "head_dim": 768},
             "4.79 M modules",
             "PVT-v2-b2's widths and depths (64/128/320/512, 3/4/6/3) on ModalSeg's residual CNN instead "
             "of the transformer (no PVT in the library); ISPRS R+D+N, 5 classes; SegFormer-B2-wide MLP "
             "head 768; the paper's 4.79 M (Table IX) counts the modules beyond the backbone"),
) + tuple(
    ZooEntry(name, name.lower(), "ModalSeg", {"optical": 3, second: 1}, 6, {})
    for name, second in (("AMMNet", "ndsm"), ("EMSNet", "ndsm"), ("ASANet", "sar"), ("MoBaNet", "ndsm"),
                         ("SGMA", "ndsm")))

# Digest of the MoBaNet paper, section 3.6: its trainable parameters part by part (DINOv2 ViT-B/14).
MOBANET_PAPER_PARTS = (("auxiliary patch embedding", 452_352), ("4 x CPIA (CPG + TFT)", 2_082_048),
                       ("4 x DGFM + LayerNorm", 1_005_312), ("4 x 1x1 projection 768->256", 786_432),
                       ("UPerNet head (64 ch)", 669_568), ("2 aux heads (training only)", 1_183_744))


def parameter_counts(net: torch.nn.Module) -> Tuple[int, int]:
    """(total, trainable) parameters."""
    params = list(net.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def mobanet_parts(net: torch.nn.Module) -> List[Tuple[str, int, int, str]]:
    """MoBaNet's trainable parts next to the paper's (part, ours, paper, why they differ)."""
    proj_norms = sum(_numel(p[0]) for p in net.proj)
    proj_convs = sum(_numel(p[1]) for p in net.proj)
    ours = (_numel(net.aux_embed), _numel(net.cpia), _numel(net.dgfm) + proj_norms, proj_convs,
            _numel(net.decoder), _numel(net.aux_heads))
    why = (f"patch {net.patch} instead of 14", "", "", "the 1x1 convs keep their bias",
           "PPM with global + local-window pooling (ONNX-friendly)", "the classifiers keep their bias")
    return [(name, o, p, w) for (name, p), o, w in zip(MOBANET_PAPER_PARTS, ours, why)]


def sgma_parts(net: torch.nn.Module) -> List[Tuple[str, int]]:
    return [("shared encoder (PVT-v2-b2: 24.85 M)", _numel(net.encoder)),
            ("semantic-guided fusion, 4 scales (paper: 4.79 M)", _numel(net.sgf)), ("MLP head", _numel(net.head))]


def export_entry(net: torch.nn.Module, entry: ZooEntry, folder: Path) -> Path:
    """Export through ModalSeg's package path; the ONNX graph must reproduce torch."""
    mods = [{"name": name, "kind": name, "bands": bands,
             "normalization": {"type": "minmax", "min": [0.0] * bands, "max": [1.0] * bands}}
            for name, bands in entry.modalities.items()]
    meta = base_metadata(f"zoo-{entry.architecture}-{entry.variant.lower()}", mods, architecture=entry.architecture,
                         description=f"{entry.network} at {entry.variant} widths (random weights, benchmark only)",
                         training_data="none", classes=CLASSES[:entry.num_classes],
                         size_multiple=int(net.size_multiple))
    return export_package(net, meta, folder / "package", architecture=entry.architecture)


def random_feeds(modalities: Dict[str, int], size: int, seed: int = 0) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {m: rng.normal(0.0, 1.0, (1, bands, size, size)).astype(np.float32) for m, bands in modalities.items()}
    feeds[PRESENCE_INPUT] = np.ones((1, len(modalities)), np.float32)
    return feeds


def torch_call(net: torch.nn.Module, feeds: Dict[str, np.ndarray]) -> Callable[[], None]:
    inputs = {m: torch.from_numpy(v) for m, v in feeds.items() if m != PRESENCE_INPUT}
    present = torch.from_numpy(feeds[PRESENCE_INPUT])

    def run() -> None:
        with torch.no_grad():
            net(inputs, present)

    return run


def onnx_call(runner: Any, feeds: Dict[str, np.ndarray]) -> Callable[[], None]:
    return lambda: runner.run(feeds)


@dataclass
class LatencyPlan:
    sizes: Sequence[int]
    repeats: int
    max_seconds: float


def measure(calls: Dict[str, Callable[[int], Callable[[], None]]], plan: LatencyPlan) -> Dict[Tuple[str, int], str]:
    """Median milliseconds per tile for each runtime and size, runtimes alternated within a size.

    ``calls[runtime](size)`` prepares one tile's run. A runtime whose warm-up exceeds the limit is
    reported as skipped at that size and every larger one."""
    cells: Dict[Tuple[str, int], str] = {}
    too_slow: Dict[str, str] = {}
    for size in sorted(plan.sizes):
        runs: Dict[str, Callable[[], None]] = {}
        for runtime, prepare in calls.items():
            if runtime in too_slow:
                cells[runtime, size] = too_slow[runtime]
                continue
            run = prepare(size)
            start = time.perf_counter()
            run()  # warm-up: allocations, ORT's first-run planning
            if time.perf_counter() - start > plan.max_seconds:
                too_slow[runtime] = cells[runtime, size] = f"skipped: > {plan.max_seconds:g} s"
            else:
                runs[runtime] = run
        times: Dict[str, List[float]] = {r: [] for r in runs}
        for _ in range(plan.repeats):
            for runtime, run in runs.items():
                start = time.perf_counter()
                run()
                times[runtime].append(time.perf_counter() - start)
        for runtime, samples in times.items():
            cells[runtime, size] = f"{1000 * statistics.median(samples):.1f}"
    return cells


def time_package(package_path: Path, net: torch.nn.Module, modalities: Dict[str, int], plan: LatencyPlan,
                 threads: int) -> Dict[Tuple[str, int], str]:
    package = load_package(package_path)
    runner = make_runner(package, "onnx", "cpu", threads)
    calls = {"onnx": lambda size: onnx_call(runner, random_feeds(modalities, size)),
             "torch": lambda size: torch_call(net, random_feeds(modalities, size))}
    if "int8" in package.variants:  # the int8 graph a package ships (models.quantize), same tiles
        int8 = make_runner(package, "onnx", "cpu", threads, precision="int8")
        calls["int8"] = lambda size: onnx_call(int8, random_feeds(modalities, size))
    return measure(calls, plan)


@dataclass
class Row:
    network: str
    variant: str
    total: int
    trainable: int
    paper: str
    latency: Dict[Tuple[str, int], str]


def zoo_rows(plan: LatencyPlan, threads: int, time_paper: bool, details: List[str], notes: List[str]) -> List[Row]:
    rows = []
    for entry in ZOO:
        torch.manual_seed(0)
        net = build_network(entry.architecture, {**entry.config, "modalities": entry.modalities,
                                                 "num_classes": entry.num_classes}).eval()
        total, trainable = parameter_counts(net)
        if entry.note:
            notes.append(f"{entry.network} ({entry.variant}): {entry.note}")
        if entry.variant == "paper" and entry.architecture == "mobanet":
            details.append("MoBaNet at paper width, trainable parts (ours vs the paper's ViT-B/14 bookkeeping):")
            for name, ours, paper, why in mobanet_parts(net):
                details.append(f"  {name:<30} {ours:>11,}  paper {paper:>11,}  {why or 'same'}")
        if entry.variant == "paper" and entry.architecture == "sgma":
            details.append("SGMA at paper width, parts:")
            details.extend(f"  {name:<50} {count:>11,}" for name, count in sgma_parts(net))
        latency: Dict[Tuple[str, int], str] = {}
        if entry.variant != "paper" or time_paper:
            folder = Path(tempfile.mkdtemp(prefix="modalseg-zoo-"))
            try:
                latency = time_package(export_entry(net, entry, folder), net, entry.modalities, plan, threads)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        rows.append(Row(entry.network, entry.variant, total, trainable, entry.paper, latency))
        print(f"  measured {entry.network} ({entry.variant})", flush=True)
        del net
        gc.collect()
    return rows


def bundled_rows(folder: Path, plan: LatencyPlan, threads: int) -> List[Row]:
    rows = []
    for onnx_path, meta in list_packages(folder):
        package = load_package(onnx_path)
        net = load_network(package)
        total, trainable = parameter_counts(net)
        modalities = {m.name: m.bands for m in meta.modalities}
        latency = time_package(onnx_path, net, modalities, plan, threads)
        rows.append(Row(meta.name, f"package {meta.version}", total, trainable, "-", latency))
        print(f"  measured {meta.name}", flush=True)
    return rows


def print_table(rows: List[Row], sizes: Sequence[int]) -> None:
    heads = [f"{rt} {s}px" for s in sizes for rt in ("ORT", "ORT int8", "torch")]
    line = f"{'network':<20} {'variant':<14} {'total':>12} {'trainable':>12} {'paper':<20} " + \
        " ".join(f"{h:>15}" for h in heads)
    print(line)
    print("-" * len(line))
    for r in rows:
        cells = [r.latency.get((rt, s), "-" if rt == "int8" else "not timed")
                 for s in sizes for rt in ("onnx", "int8", "torch")]
        print(f"{r.network:<20} {r.variant:<14} {r.total:>12,} {r.trainable:>12,} {r.paper:<20} " +
              " ".join(f"{c:>15}" for c in cells))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 px, one run, paper widths not timed")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=4.0,
                        help="a runtime whose warm-up tile takes longer is not timed")
    parser.add_argument("--models", type=Path, default=BUNDLED)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats = [64], 1
    sizes = sorted(args.sizes)
    torch.set_num_threads(args.threads)
    plan = LatencyPlan(sizes, args.repeats, args.max_seconds)
    started = time.perf_counter()
    details: List[str] = []
    notes: List[str] = []
    rows = zoo_rows(plan, args.threads, not args.quick, details, notes) + bundled_rows(args.models, plan, args.threads)
    print()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"Parameters, and CPU latency in ms per tile (batch 1, {args.threads} threads, median of {args.repeats} "
          f"run(s) after 1 warm-up, ONNX Runtime and torch alternated; random weights for the seed networks; "
          f"'skipped: > N s': the warm-up tile took longer; load average now {load} on {os.cpu_count()} cores)")
    print_table(rows, sizes)
    print()
    print("\n".join(details))
    print()
    print("What differs from the papers:")
    print("\n".join(f"- {n}" for n in notes))
    print("- ModalSeg rows: each network's defaults with optical (3 bands) + one 1-band modality, 6 classes; "
          "the bundled packages derive 5 elevation features from the nDSM inside the graph")
    print(f"\ntotal time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
