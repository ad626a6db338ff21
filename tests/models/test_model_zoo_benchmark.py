"""The model-zoo benchmark's smoke run prints every seed network and bundled package with real counts."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NETWORKS = ("AMMNet", "EMSNet", "ASANet", "MoBaNet", "SGMA")
ROW = re.compile(r"^(\S+)\s+(paper|ModalSeg|package \S+)\s+([\d,]+)\s+([\d,]+)\s+(.*)$")


@pytest.fixture(scope="module")
def quick_run() -> str:
    done = subprocess.run([sys.executable, "-m", "benchmarks.model_zoo", "--quick"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _rows(text: str) -> dict:
    rows = {}
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            name, variant, total, trainable, rest = match.groups()
            rows[name, variant] = (int(total.replace(",", "")), int(trainable.replace(",", "")), rest.split())
    return rows


def test_every_network_at_both_widths_with_counts_and_latencies(quick_run):
    rows = _rows(quick_run)
    for name in NETWORKS:
        for variant in ("paper", "ModalSeg"):
            total, trainable, _ = rows[name, variant]
            assert 0 < trainable <= total, (name, variant)
        *_, onnx_ms, int8_ms, torch_ms = rows[name, "ModalSeg"][2]
        assert float(onnx_ms) > 0 and float(torch_ms) > 0, (name, onnx_ms, torch_ms)
        assert int8_ms == "-"  # the seed networks ship no int8 graph
    assert rows["MoBaNet", "ModalSeg"][0] > rows["MoBaNet", "ModalSeg"][1]  # the ViT is frozen
    bundled = {p.name for p in (REPO_ROOT / "resources" / "models").iterdir() if list(p.glob("*.onnx"))}
    assert bundled <= {name for name, variant in rows if variant.startswith("package")}
    for package in (REPO_ROOT / "resources" / "models").glob("*/*.int8.onnx"):  # their int8 column is timed
        row = next(cells for (name, variant), (_, _, cells) in rows.items() if name == package.parent.name)
        assert float(row[-2]) > 0, (package, row)


def test_paper_width_counts_reproduce_the_papers(quick_run):
    rows = _rows(quick_run)
    # EMSNet's code widths give the paper's 15.26 M within 1 %.
    assert abs(rows["EMSNet", "paper"][0] - 15_260_000) < 0.01 * 15_260_000
    # MoBaNet ViT-B: the PEFT modules match the paper's bookkeeping exactly (DINOv2 ViT-B, D = 768) and the
    # printed parts add up to the trainable count of the table.
    parts = dict(re.findall(r"^  (\S.*?\S)\s+([\d,]+)  paper", quick_run, re.M))
    assert parts["4 x CPIA (CPG + TFT)"] == "2,082,048"
    assert parts["4 x DGFM + LayerNorm"] == "1,005,312"
    assert sum(int(v.replace(",", "")) for v in parts.values()) == rows["MoBaNet", "paper"][1]
    assert "6,179,456 trainable" in quick_run
