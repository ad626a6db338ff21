"""The CUDA paths, checked on a GPU machine: the torch runtime against the CPU graph, the
out-of-memory fallback on a real CUDA allocator error, a fine-tuning step, and ONNX Runtime's providers.

    python -m benchmarks.cuda --prepare build/cuda-tiles      # here: real tiles, read and normalised by the engine
    python -m benchmarks.cuda --tiles build/cuda-tiles [--device cuda] [--repeats 5]   # on the GPU machine

Two phases, because a GPU machine may have torch and onnxruntime but no GDAL: ``--prepare`` reads
real rasters through the engine (the LiDAR HD fields tile of ``../shared/data`` for the urban
packages, else the bundled demo tile; the SpaceNet 6 SAR + RGB tile for the flood package, when present) and stores, per bundled package,
its tiles as the engine feeds them (``<package>.npz``, stored as float16); ``--tiles`` loads the
bundled packages of the checkout and needs only numpy, torch and onnxruntime. Per package it prints:

* class agreement and largest probability / robustness difference of the torch runtime on
  ``--device`` against ONNX Runtime's fp32 graph on the CPU (the reference every figure was
  measured on), and the largest departure of the robustness shares from summing to 1;
* tiles per second of both, same tiles, ``--repeats`` alternated runs, median (batch 16);
* the engine's out-of-memory fallback (``engine.runtime.run_with_fallback``) with the allocator
  capped so that a batch of 64 tiles does not fit: the warnings it gave, whether the classes are
  the uncapped run's, and that the next batch starts at the size that fitted (no new warning);
* one fine-tuning step (the network's own ``training_loss`` with class weights, backward, AdamW)
  on the device: finite loss and weights that moved;
* ONNX Runtime's providers, and where CUDA is one of them, the package's auto graph on the GPU;
* last, what the GPU probes find and the advice ``segment`` gives after an auto-device run that
  stayed on the CPU (``environment.unused_gpu_advice``).

The last line per package: ``<package> cuda: agreement 99.99 %, speed-up 5.5x, fallback ok, step ok``.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .plugin_path import REPO_ROOT, expose_plugin_package
from .timing import alternate

BUNDLED = REPO_ROOT / "resources" / "models"
DEMO = REPO_ROOT / "resources" / "demo"
BATCH = 16
OOM_BATCH = 64


def _layers_for(kinds: set, shared: Path) -> Dict[str, object]:
    """A real tile for the package's modalities: SpaceNet 6 SAR + RGB for SAR packages, the LiDAR
    HD fields tile (RGB + nDSM, 702 x 741 px at 0.5 m) for the others, else the bundled demo tile."""
    from modalseg.engine import LayerInput

    if "sar" in kinds:
        folder = shared / "spacenet6_sar_rgb"
        if not folder.exists():
            return {}
        return {"optical": LayerInput(str(folder / "rgb_unmasked.tif")), "sar": LayerInput(str(folder / "sar_masked.tif"))}
    fields = shared / "lidarhd_fields" / "ebb"
    stem = fields if fields.with_name("ebb_rgb.tif").exists() else DEMO / "lidarprod_870000_6618000"
    return {"optical": LayerInput(f"{stem}_rgb.tif"), "elevation": LayerInput(f"{stem}_ndsm.tif", elevation_type="ndsm")}


def prepare(out: Path, tiles: int, names: Sequence[str] = ()) -> None:
    """Per bundled package (or those of ``names``): its first ``tiles`` tiles as the engine feeds them."""
    from benchmarks.precision import prepared_batches
    from modalseg.engine import bind_modalities
    from modalseg.engine.package import list_packages, load_package
    from modalseg.models.data.shared_data import SHARED_DATA

    out.mkdir(parents=True, exist_ok=True)
    for onnx_path, meta in list_packages(BUNDLED):
        if names and meta.name not in names:
            continue
        layers = _layers_for({m.kind for m in meta.modalities}, SHARED_DATA)
        if not layers:
            print(f"{meta.name}: skipped (its sample layers are not in {SHARED_DATA})")
            continue
        package = load_package(onnx_path)
        sources = bind_modalities(package.metadata, layers)[0]
        batches = prepared_batches(package, sources, BATCH, tiles)
        # float16 on disk keeps the folder small enough to travel; both runtimes read the same values
        feeds = {k: np.concatenate([b[k] for b in batches]).astype(np.float16 if k in meta.modality_names else np.float32)
                 for k in batches[0]}
        np.savez_compressed(out / f"{meta.name}.npz", **feeds)
        print(f"{meta.name}: {len(next(iter(feeds.values())))} tiles of {', '.join(sorted(layers))}")


def _repeated(feeds: Dict[str, np.ndarray], count: int) -> Dict[str, np.ndarray]:
    """The tiles repeated in order up to ``count`` (at least all of them once)."""
    n = len(next(iter(feeds.values())))
    copies = int(np.ceil(count / n))
    return {k: np.concatenate([v] * copies)[:max(count, n)] for k, v in feeds.items()}


def _batches(feeds: Dict[str, np.ndarray], size: int) -> List[Dict[str, np.ndarray]]:
    n = len(next(iter(feeds.values())))
    return [{k: v[i:i + size] for k, v in feeds.items()} for i in range(0, n, size)]


def _run_all(runner, batches) -> Tuple[np.ndarray, np.ndarray]:
    outs = [runner.run(b) for b in batches]
    logits = np.concatenate([o[0] for o in outs])
    robustness = np.concatenate([o[1] for o in outs]) if outs[0][1] is not None else None
    return logits, robustness


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _fallback(runner, feeds, reference: np.ndarray, torch) -> str:
    """The batch of OOM_BATCH tiles with the allocator capped at about 3 batches of 1 tile's peak."""
    from modalseg.engine.runtime import run_with_fallback

    one = {k: v[:1] for k, v in feeds.items()}
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    runner.run(one)
    per_tile = max(1, torch.cuda.max_memory_allocated() - base)
    big = _repeated(feeds, OOM_BATCH)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, (base + 3 * per_tile) / total))
    warnings: List[str] = []
    try:
        logits, _ = run_with_fallback(runner, big, warnings.append)
        first = len(warnings)
        run_with_fallback(runner, big, warnings.append)  # the next batch starts at the size that fitted
    except Exception as exc:  # the fallback itself failed: that is this check's finding, not the run's end
        return f"FAILED ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
        limit, runner.batch_limit = runner.batch_limit, None
    expected = _repeated({"classes": reference}, OOM_BATCH)["classes"]
    same = float((logits.argmax(1) == expected).mean())
    ok = first > 0 and len(warnings) == first and same >= 0.9999 and runner.on_gpu
    return (f"{'ok' if ok else 'FAILED'} ({first} warning(s), the last: {warnings[-1] if warnings else 'none'}; "
            f"next batch: {len(warnings) - first} new warning(s), {limit} tiles per run; classes equal the "
            f"uncapped run on {100 * same:.3f} % of pixels; still on the GPU: {runner.on_gpu})")


def _training_step(package, feeds, device: str, torch) -> str:
    """One step of the fine-tuning loop's arithmetic on ``device``: loss, backward, AdamW."""
    from modalseg.models.data.chips import IGNORE
    from modalseg.models.networks._base import TrainingBatch
    from modalseg.models.networks.registry import load_network
    from modalseg.models.nn.losses import LossSettings
    from modalseg.models.optimisation import apply_gradients

    meta = package.metadata
    net = load_network(package).to(device).train()
    before = [p.detach().clone() for p in net.parameters() if p.requires_grad]
    batch = {k: v[:4] for k, v in feeds.items()}
    with torch.no_grad():
        target = net({m: torch.from_numpy(batch[m]).to(device) for m in meta.modality_names},
                     torch.ones(4, len(meta.modalities), device=device))["logits"].argmax(1)
    target[:, :8] = IGNORE  # unlabelled pixels, as the loop's labels have them
    weights = torch.ones(len(meta.classes), dtype=torch.float32, device=device)
    tb = TrainingBatch({m: torch.from_numpy(batch[m]).to(device) for m in meta.modality_names},
                       torch.ones(4, len(meta.modalities), device=device), target.long())
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    loss, _ = net.training_loss(tb, LossSettings(class_weights=weights))
    apply_gradients(loss, opt, net.parameters())
    moved = any(not torch.equal(a, b.detach()) for a, b in zip(before, [p for p in net.parameters() if p.requires_grad]))
    ok = bool(torch.isfinite(loss)) and moved
    return f"{'ok' if ok else 'FAILED'} (loss {loss.item():.3f} on {device}, weights moved: {moved})"


def check(folder: Path, device: str, repeats: int, timed_tiles: int = 64, names: Sequence[str] = ()) -> List[str]:
    import onnxruntime as ort
    import torch

    from modalseg.engine.package import load_package
    from modalseg.engine.runtime import make_runner
    from modalseg.models.networks.registry import load_network

    providers = ort.get_available_providers()
    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
    print(f"onnxruntime {ort.__version__}, providers: {', '.join(providers)}")
    summary = []
    for npz in sorted(folder.glob("*.npz")):
        name = npz.stem
        if names and name not in names:
            continue
        package = load_package(BUNDLED / name)
        fp32 = replace(package, variants={})
        stored = {k: v.astype(np.float32) for k, v in np.load(npz).items()}
        feeds = _repeated(stored, timed_tiles)  # a small real tile set: the speed figures need full batches
        batches = _batches(feeds, BATCH)
        tiles = len(next(iter(feeds.values())))
        real = len(next(iter(stored.values())))
        cpu = make_runner(fp32, "onnx", "cpu")
        gpu = make_runner(fp32, "torch", device, network_loader=load_network)
        ref_logits, ref_rob = _run_all(cpu, batches)
        logits, rob = _run_all(gpu, batches)
        agreement = float((logits.argmax(1) == ref_logits.argmax(1)).mean())
        prob_diff = float(np.abs(_softmax(logits) - _softmax(ref_logits)).max())
        rob_diff = float(np.abs(rob - ref_rob).max()) if rob is not None else 0.0
        rob_sum = float(np.abs(rob.sum(1) - 1).max()) if rob is not None else 0.0
        sync = torch.cuda.synchronize if gpu.on_gpu else (lambda: None)
        timings = alternate({"cpu": lambda: _run_all(cpu, batches), "gpu": lambda: (_run_all(gpu, batches), sync())},
                            repeats)
        t_cpu, t_gpu = timings["cpu"][0], timings["gpu"][0]
        print(f"\n{name} ({real} real tiles of {next(iter(feeds.values())).shape[-1]} px, repeated to {tiles})")
        print(f"  torch on {gpu.device} against onnxruntime fp32 on {cpu.device}: classes agree on "
              f"{100 * agreement:.3f} %, largest probability difference {prob_diff:.2e}, robustness "
              f"{rob_diff:.2e}; robustness sums depart from 1 by at most {rob_sum:.2e}")
        print(f"  tiles/s: torch {tiles / t_gpu:.1f}, onnxruntime CPU {tiles / t_cpu:.1f} "
              f"({t_cpu / t_gpu:.1f}x; median of {repeats}, batch {BATCH})")
        fallback = _fallback(gpu, feeds, logits.argmax(1), torch) if gpu.on_gpu else "n/a (not run: no GPU)"
        print(f"  out-of-memory fallback, batch {OOM_BATCH} under a capped allocator: {fallback}")
        step = _training_step(package, feeds, "cuda" if gpu.on_gpu else "cpu", torch)
        print(f"  fine-tuning step: {step}")
        if "CUDAExecutionProvider" in providers:
            ort_gpu = make_runner(package, "onnx", "cuda", precision="auto")
            g_logits, _ = _run_all(ort_gpu, batches)
            print(f"  onnxruntime on {ort_gpu.device}: classes agree with the CPU fp32 graph on "
                  f"{100 * float((g_logits.argmax(1) == ref_logits.argmax(1)).mean()):.3f} %")
        else:
            print("  onnxruntime CUDA provider: not in this onnxruntime build (fp16 graph not run on a GPU)")
        ran_on = cpu.device
        summary.append(f"{name} {device}: agreement {100 * agreement:.2f} %, speed-up {t_cpu / t_gpu:.1f}x, "
                       f"fallback {fallback.split()[0]}, step {step.split()[0]}")
    if summary:  # what segment tells a user whose onnxruntime is the CPU build, here with the real probes
        from modalseg.environment import detect_nvidia_gpu, unused_gpu_advice

        print(f"\nGPU probes: {detect_nvidia_gpu().describe()}")
        print(f"advice after an auto-device run on {ran_on.split(',')[0]}): "
              f"{unused_gpu_advice('auto', ran_on, '<how to install the CUDA build>') or 'none'}")
    return summary


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepare", type=Path, help="write each package's tiles to this folder (needs GDAL)")
    parser.add_argument("--tiles", type=Path, help="check the CUDA paths on the tiles of this folder")
    parser.add_argument("--count", type=int, default=32, help="tiles per package (--prepare)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu", "auto"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timed-tiles", type=int, default=64, help="tiles per timed run (real tiles repeated)")
    parser.add_argument("--package", action="append", default=[], help="only this bundled package (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the summary lines here")
    args = parser.parse_args(argv)
    expose_plugin_package()
    if args.prepare:
        prepare(args.prepare, args.count, args.package)
    if args.tiles:
        summary = check(args.tiles, args.device, args.repeats, args.timed_tiles, args.package)
        print()
        print("\n".join(summary))
        if args.json:
            args.json.write_text(json.dumps(summary, indent=1))
    if not (args.prepare or args.tiles):
        parser.error("give --prepare FOLDER and/or --tiles FOLDER")


if __name__ == "__main__":
    main()
