"""On a CPU a batch runs as concurrent runs of one ONNX Runtime session (``runtime.CPU_STREAMS``): the
tiles come back in their order with the values of a single run, whatever the batch size."""
import numpy as np
import pytest

from modalseg.engine import load_package
from modalseg.engine import runtime
from tests.fixtures.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "resources" / "models" / "modalseg-sgma-urban"


def _feeds(batch: int) -> dict:
    rng = np.random.default_rng(batch)
    present = np.ones((batch, 2), np.float32)
    present[-1, 0] = 0.0  # the last tile without its optical layer: rows of every feed must stay together
    return {"optical": rng.normal(size=(batch, 3, 64, 96)).astype(np.float32) * present[:, :1, None, None],
            "ndsm": rng.gamma(1.0, 3.0, size=(batch, 1, 64, 96)).astype(np.float32), "present": present}


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5])
def test_concurrent_runs_give_each_tile_its_own_outputs(monkeypatch, batch):
    package = load_package(PACKAGE)
    concurrent = runtime.make_runner(package, "onnx", "cpu", threads=2)
    monkeypatch.setattr(runtime, "CPU_STREAMS", 1)
    single = runtime.make_runner(package, "onnx", "cpu", threads=1)
    assert (concurrent.streams, single.streams) == (2, 1)
    assert "2 threads: 2 tiles' runs at once, 1 thread(s) each" in concurrent.device
    assert "1 thread," in single.device
    feeds = _feeds(batch)
    (logits, robustness), (logits_one, robustness_one) = concurrent.run(feeds), single.run(feeds)
    assert logits.shape == logits_one.shape == (batch, len(package.metadata.classes), 64, 96)
    np.testing.assert_allclose(logits, logits_one, atol=1e-4)
    np.testing.assert_allclose(robustness, robustness_one, atol=1e-5)
    assert (robustness[-1, 0] == 0).all()  # the tile without optical kept its own presence row
    if batch > 1:
        assert (robustness[0, 0] > 0).all()
