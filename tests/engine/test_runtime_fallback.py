"""GPU out of memory (``runtime.run_with_fallback``): the batch is halved until it fits, later batches
start at the size that fitted, a single tile that does not fit moves the run to the CPU, and the
tiles come back in order with the values of an unsplit run. CI has no GPU: the real ONNX Runtime
session of a bundled package runs, and only the GPU's refusal of large batches is played, with the
CUDA allocator's own message (``python -m benchmarks.cuda`` checks the same on a real capped GPU)."""
import numpy as np
import pytest

from modalseg.engine import load_package
from modalseg.engine import runtime
from tests.fixtures.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "resources" / "models" / "modalseg-sgma-urban"
OOM = ("CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a total capacity of 139.81 GiB of which "
       "1.20 GiB is free.")


class SmallGpu:
    """A real CPU runner that refuses, as a full GPU would, batches above ``fits`` tiles."""

    def __init__(self, fits: int, error: str = OOM, on_gpu: bool = True) -> None:
        self.inner = runtime.make_runner(load_package(PACKAGE), "onnx", "cpu", threads=1)
        self.fits, self.error, self.on_gpu, self.batch_limit, self.sizes = fits, error, on_gpu, None, []

    def run(self, feeds):
        size = next(iter(feeds.values())).shape[0]
        self.sizes.append(size)
        if size > self.fits:
            raise RuntimeError(self.error)
        return self.inner.run(feeds)

    def to_cpu(self) -> None:
        self.on_gpu, self.fits = False, 1 << 30


def _feeds(batch: int) -> dict:
    rng = np.random.default_rng(batch)
    return {"optical": rng.normal(size=(batch, 3, 64, 64)).astype(np.float32),
            "ndsm": rng.gamma(1.0, 3.0, size=(batch, 1, 64, 64)).astype(np.float32),
            "present": np.ones((batch, 2), np.float32)}


def test_halves_until_it_fits_and_keeps_that_size_for_later_batches():
    gpu, warnings = SmallGpu(fits=3), []
    feeds = _feeds(8)
    logits, robustness = runtime.run_with_fallback(gpu, feeds, warnings.append)
    whole, whole_robustness = gpu.inner.run(feeds)
    np.testing.assert_allclose(logits, whole, atol=1e-4)
    np.testing.assert_allclose(robustness, whole_robustness, atol=1e-5)
    assert gpu.sizes == [8, 4, 2, 2, 2, 2]
    assert warnings == ["GPU out of memory with 8 tiles per batch; continuing with 4",
                        "GPU out of memory with 4 tiles per batch; continuing with 2"]
    gpu.sizes.clear()
    runtime.run_with_fallback(gpu, _feeds(5), warnings.append)
    assert gpu.sizes == [2, 2, 1] and len(warnings) == 2  # no new failure, no new warning
    assert gpu.on_gpu


def test_a_single_tile_that_does_not_fit_moves_the_run_to_the_cpu():
    gpu, warnings = SmallGpu(fits=0), []
    logits, _ = runtime.run_with_fallback(gpu, _feeds(2), warnings.append)
    assert logits.shape[0] == 2 and not gpu.on_gpu and gpu.batch_limit is None
    assert warnings[-1] == "GPU out of memory even for a single tile; continuing on the CPU"
    assert gpu.sizes == [2, 1, 2]  # on the CPU the whole batch runs again at once


@pytest.mark.parametrize("error, on_gpu", [("CUDNN_STATUS_EXECUTION_FAILED", True), (OOM, False)])
def test_other_errors_and_cpu_memory_errors_are_not_retried(error, on_gpu):
    gpu = SmallGpu(fits=0, error=error, on_gpu=on_gpu)
    with pytest.raises(RuntimeError, match=error.split()[0]):
        runtime.run_with_fallback(gpu, _feeds(2), print)
    assert gpu.sizes == [2] and gpu.batch_limit is None
