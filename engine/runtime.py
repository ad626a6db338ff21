"""Runtimes that turn a batch of normalised tiles into class probabilities and robustness maps.

ONNX Runtime (CUDA execution provider when present and working, else CPU) needs only the
``.onnx`` graph, or the precision variant ``engine.precision`` chooses for the device the session
lands on; the torch runtime runs the network rebuilt from the package's weights by a
``NetworkLoader`` the caller passes in (``models.networks.registry.load_network``: the engine does
not import ``models``). Both runtimes are imported lazily so the plugin loads without them.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import EngineError
from .package import FLOAT_PRECISION, LOGITS_OUTPUT, ROBUSTNESS_OUTPUT, ModelPackage
from .precision import choose_graph
from .vocabulary import DEVICES, PRECISIONS, RUNTIMES, check_key

NetworkLoader = Callable[[ModelPackage], Any]  # package -> torch module (its weights loaded)
# On a CPU a batch is split between this many concurrent runs of the one session, each with its share
# of the threads: a 256 px tile's many small operators leave intra-op threads waiting at every
# barrier, while runs on separate tiles never wait for each other (bare runtime, 2 cores, batch 4:
# see the README's benchmarks table). ONNX Runtime's Run may be called from several threads at once.
CPU_STREAMS = 2
Outputs = Tuple[np.ndarray, Optional[np.ndarray]]  # logits B x N x H x W, robustness B x K x H x W


def cpu_threads() -> int:
    """Threads for intra-op parallelism: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "out of memory" in text or "failed to allocate" in text or "cudaerrormemoryallocation" in text


def _ignore(text: str) -> None:
    """No-op log for callers that do not collect warnings."""


def provider_attempts(device: str, available: Sequence[str]) -> List[List[str]]:
    """The execution-provider lists to try, in order, for ``device`` with ``available`` providers:
    the GPU first when it may be used, then the CPU unless the GPU was demanded."""
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        gpu = [["CUDAExecutionProvider", "CPUExecutionProvider"]]
        return gpu if device == "cuda" else gpu + [["CPUExecutionProvider"]]
    return [["CPUExecutionProvider"]]


class OnnxRunner:
    def __init__(self, package: ModelPackage, device: str = "auto", threads: Optional[int] = None,
                 precision: Optional[str] = None, warn: Callable[[str], None] = _ignore):
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineError("onnxruntime is not installed; install it (pip install onnxruntime) "
                              "or use ModalSeg's dependency installer") from None
        self._ort = ort
        self.package = package
        self.threads = threads or cpu_threads()
        self.requested_precision, self._warn = precision, warn
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise EngineError("CUDA was requested but this onnxruntime has no CUDA support "
                              "(install onnxruntime-gpu and an NVIDIA driver, or choose device 'auto' or 'cpu')")
        self.session = None
        for providers in provider_attempts(device, available):
            on_gpu = providers[0] == "CUDAExecutionProvider"
            self.graph = choose_graph(package, precision, on_gpu, warn)  # each device its graph
            try:
                self.session = self._session(providers)
            except Exception:  # a broken CUDA install: the CPU attempt follows, the log tells which device ran
                if not on_gpu:
                    raise
                continue
            if not on_gpu or self.session.get_providers()[0] == "CUDAExecutionProvider":
                break
            self.session = None  # ONNX Runtime fell back to the CPU by itself: take the CPU's graph instead
        if self.session is None:
            raise EngineError("CUDA was requested but onnxruntime could not start on the GPU")
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._pool: Optional[ThreadPoolExecutor] = None
        self.batch_limit: Optional[int] = None  # tiles per run once the GPU ran out of memory (run_with_fallback)

    def _session(self, providers):
        options = self._ort.SessionOptions()
        # the concurrent runs a batch is split into: on a CPU, CPU_STREAMS when there are the threads
        self.streams = min(CPU_STREAMS, self.threads) if providers[0] == "CPUExecutionProvider" else 1
        options.intra_op_num_threads = max(1, self.threads // self.streams)
        options.inter_op_num_threads = 1
        # Idle intra-op threads sleep instead of spinning, leaving the cores' gaps to the engine's
        # reader and writer threads (measured: the session itself is no slower).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        return self._ort.InferenceSession(str(self.graph.package.onnx_path), options, providers=providers)

    @property
    def on_gpu(self) -> bool:
        return self.session.get_providers()[0] == "CUDAExecutionProvider"

    @property
    def device(self) -> str:
        if self.on_gpu:
            return f"GPU (onnxruntime CUDAExecutionProvider, {self.graph.describe()})"
        if self.streams > 1:
            threads = (f"{self.threads} threads: {self.streams} tiles' runs at once, "
                       f"{self.threads // self.streams} thread(s) each")
        else:
            threads = f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        return f"CPU (onnxruntime CPUExecutionProvider, {threads}, {self.graph.describe()})"

    @property
    def precision(self) -> str:
        return self.graph.precision

    def to_cpu(self) -> None:
        self.graph = choose_graph(self.package, self.requested_precision, False, self._warn)
        self.session = self._session(["CPUExecutionProvider"])

    def run(self, feeds: Dict[str, np.ndarray]) -> Outputs:
        wanted = [LOGITS_OUTPUT] + ([ROBUSTNESS_OUTPUT] if ROBUSTNESS_OUTPUT in self._outputs else [])
        batch = next(iter(feeds.values())).shape[0]
        streams = min(self.streams, batch)
        if streams == 1:
            results = self.session.run(wanted, feeds)
        else:  # every feed is batch-first (tiles, presence rows): each run takes its rows of all of them
            if self._pool is None:
                self._pool = ThreadPoolExecutor(CPU_STREAMS, "modalseg-runtime")
            edges = np.linspace(0, batch, streams + 1).round().astype(int)
            parts = [self._pool.submit(self.session.run, wanted, {k: v[a:b] for k, v in feeds.items()})
                     for a, b in zip(edges[:-1], edges[1:])]
            runs = [part.result() for part in parts]
            results = [np.concatenate([run[i] for run in runs]) for i in range(len(wanted))]
        return results[0], (results[1] if len(results) > 1 else None)


class TorchRunner:
    """Runs the package's torch weights (same graph as the ONNX file, rebuilt by ``load_network``)."""

    def __init__(self, package: ModelPackage, load_network: NetworkLoader, device: str = "auto",
                 threads: Optional[int] = None):
        try:
            import torch
        except ImportError:
            raise EngineError("the torch runtime needs PyTorch, which is not installed; "
                              "choose the ONNX runtime or install torch") from None
        self._torch = torch
        self.package = package
        if device == "cuda" and not torch.cuda.is_available():
            raise EngineError("CUDA was requested but torch sees no GPU (choose device 'auto' or 'cpu')")
        self._device = torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
        self.threads = threads or cpu_threads()
        if self._device.type == "cpu":
            torch.set_num_threads(self.threads)
        try:
            self.network = load_network(package).to(self._device).eval()
        except ValueError as exc:
            raise EngineError(str(exc)) from None
        self.batch_limit: Optional[int] = None  # tiles per run once the GPU ran out of memory (run_with_fallback)

    @property
    def on_gpu(self) -> bool:
        return self._device.type == "cuda"

    @property
    def device(self) -> str:
        if self.on_gpu:
            return f"GPU (torch CUDA, {self._torch.cuda.get_device_name(self._device)})"
        return f"CPU (torch, {self.threads} threads)"

    def to_cpu(self) -> None:
        self._device = self._torch.device("cpu")
        self.network = self.network.to(self._device)
        self._torch.cuda.empty_cache()

    def run(self, feeds: Dict[str, np.ndarray]) -> Outputs:
        torch = self._torch
        meta = self.package.metadata
        with torch.inference_mode():
            inputs = {m: torch.from_numpy(feeds[m]).to(self._device) for m in meta.modality_names}
            present = torch.from_numpy(feeds[meta.presence_input]).to(self._device) if meta.presence_input else \
                torch.ones(next(iter(inputs.values())).shape[0], len(inputs), device=self._device)
            out = self.network(inputs, present)
            robustness = out.get(ROBUSTNESS_OUTPUT)
            return (out[LOGITS_OUTPUT].float().cpu().numpy(),
                    None if robustness is None else robustness.float().cpu().numpy())


def make_runner(package: ModelPackage, runtime: str = "onnx", device: str = "auto", threads: Optional[int] = None,
                network_loader: Optional[NetworkLoader] = None, precision: Optional[str] = None,
                warn: Callable[[str], None] = _ignore):
    """The runner for ``runtime`` (a key of ``RUNTIMES``) on ``device`` (a key of ``DEVICES``) with the
    graph of ``precision`` (a key of ``PRECISIONS``, ONNX only; None = the package's graph as loaded); the torch runtime needs ``network_loader``."""
    check_key(RUNTIMES, runtime, "runtime")
    check_key(DEVICES, device, "device")
    if precision is not None:
        check_key(PRECISIONS, precision, "precision")
    if runtime == "torch":
        if precision not in (None, "auto", FLOAT_PRECISION) or package.precision != FLOAT_PRECISION:
            raise EngineError(f"precision {precision or package.precision} needs the ONNX runtime "
                              "(the torch runtime runs the fp32 weights)")
        if package.weights_path is None:
            raise EngineError(f"model '{package.metadata.name}' has no torch weights; use the ONNX runtime")
        if network_loader is None:
            raise EngineError("the torch runtime needs the network loader of ModalSeg's models "
                              "(models.networks.registry.load_network); the caller passes it in")
        return TorchRunner(package, network_loader, device, threads)
    return OnnxRunner(package, device, threads, precision, warn)


def run_with_fallback(runner, feeds: Dict[str, np.ndarray], warn: Callable[[str], None]) -> Outputs:
    """Run a batch in parts of at most ``runner.batch_limit`` tiles; on GPU out-of-memory halve that
    limit (said once per halving) and, at a single tile, move to the CPU. The limit is kept on the
    runner, so later batches start at the size that fitted instead of failing again (seen on a
    capped H200: without it every batch of a run re-split from the top, with a warning per split)."""
    batch = next(iter(feeds.values())).shape[0]
    if batch == 0:
        return runner.run(feeds)
    parts: List[Outputs] = []
    start = 0
    while start < batch:
        size = min(runner.batch_limit or batch, batch - start)
        try:
            parts.append(runner.run({k: v[start:start + size] for k, v in feeds.items()}))
        except Exception as exc:  # runtimes raise their own types; only memory errors are retried
            if not (runner.on_gpu and is_out_of_memory(exc)):
                raise
            if size > 1:  # halved from the part that failed (rounded up: a short last part of 3 -> 2)
                runner.batch_limit = (size + 1) // 2
                warn(f"GPU out of memory with {size} tiles per batch; continuing with {runner.batch_limit}")
            else:
                warn("GPU out of memory even for a single tile; continuing on the CPU")
                runner.to_cpu()
                runner.batch_limit = None
            continue
        start += size
    if len(parts) == 1:
        return parts[0]
    robustness = None if parts[0][1] is None else np.concatenate([p[1] for p in parts])
    return np.concatenate([p[0] for p in parts]), robustness
