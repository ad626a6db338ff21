"""benchmarks/cuda.py, run on the CPU: ``--prepare`` stores real tiles as the engine feeds them, and
``--tiles`` checks them in a process where GDAL cannot be imported (a GPU machine may have none):
the torch runtime agrees with the ONNX graph, the fine-tuning step runs, the summary line is written."""
import json
import os
import re
import subprocess
import sys

import numpy as np

from tests.fixtures.paths import REPO_ROOT

PACKAGE = "modalseg-elevation-urban"


def test_prepare_then_check_without_gdal(tmp_path):
    tiles = tmp_path / "tiles"
    run = [sys.executable, "-m", "benchmarks.cuda", "--package", PACKAGE]
    subprocess.run(run + ["--prepare", str(tiles), "--count", "2"], cwd=REPO_ROOT, check=True, timeout=600)
    stored = np.load(tiles / f"{PACKAGE}.npz")
    assert stored["ndsm"].dtype == np.float16 and stored["ndsm"].shape[0] == 2
    assert np.isfinite(stored["ndsm"]).all() and stored["ndsm"].std() > 0

    no_gdal = tmp_path / "no_gdal" / "osgeo"
    no_gdal.mkdir(parents=True)
    (no_gdal / "__init__.py").write_text("raise ImportError('no GDAL on this machine')\n")
    env = dict(os.environ, PYTHONPATH=str(no_gdal.parent))
    out = subprocess.run(run + ["--tiles", str(tiles), "--device", "cpu", "--repeats", "1", "--timed-tiles", "4",
                                "--json", str(tmp_path / "summary.json")],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    agreement = float(re.search(r"classes agree on ([\d.]+) %", out.stdout).group(1))
    assert agreement >= 99.9  # torch and ONNX Runtime on the same CPU, the same weights
    assert "fine-tuning step: ok" in out.stdout and "fallback, batch 64 under a capped allocator: n/a" in out.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary) == 1
    assert re.fullmatch(rf"{PACKAGE} cpu: agreement {agreement:.2f} %, speed-up \d+\.\dx, fallback n/a, step ok",
                        summary[0]), summary
