"""``python -m modalseg``: help, exit codes and messages in a real process; segment (also on a
folder of sheets and with --dask), models and evaluate in this one, on the shared LiDAR HD tile."""
import os
import subprocess  # nosec B404 - argument lists only
import sys

import numpy as np
import pytest
from osgeo import gdal

from modalseg.cli.main import main
from tests.conftest import PLUGIN_DIR


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modalseg", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(PLUGIN_DIR)}, check=False)  # nosec B603


@pytest.fixture(scope="module")
def houses(shared_data):
    stem = shared_data / "lidarhd_houses" / "lidarprod_870000_6618000"
    return {part: f"{stem}_{part}.tif" for part in ("rgb", "ndsm", "label")}


def _segment(houses, folder, *extra):
    return main(["segment", "--optical", houses["rgb"], "--elevation", houses["ndsm"], "--elevation-type", "ndsm",
                 "-o", str(folder / "classes.tif"), "--probabilities", str(folder / "probabilities.tif"),
                 "--tile-size", "64", "--overlap", "16", "--threads", "1", "--block-tile-rows", "1", *extra])


def _read(path):
    return gdal.Open(str(path)).ReadAsArray()


def test_help_reads_like_the_algorithm_help_and_lists_the_vocabulary():
    top = _cli("--help")
    assert top.returncode == 0 and all(command in top.stdout for command in ("segment", "models", "evaluate"))
    segment = _cli("segment", "--help")
    assert segment.returncode == 0
    text = " ".join(segment.stdout.split())
    for phrase in ("Classifies every pixel of an area", "takes the bundled package that uses the most of the given "
                   "layers", "a failed or cancelled run (Ctrl-C) leaves no file", "--dask local:N",
                   "bit-identical to a run without --dask", "hann: Hann window", "int8", "{auto,dsm,ndsm}",
                   "Exit codes: 0 done, 1 the run failed"):
        assert phrase in text, phrase


def test_usage_errors_exit_2_and_bad_input_exits_1_with_the_engine_message(tmp_path, houses):
    usage = _cli("segment", "--optical", houses["rgb"])
    assert usage.returncode == 2 and "the following arguments are required: --output" in usage.stderr
    missing = _cli("segment", "--optical", str(tmp_path / "nowhere.tif"), "-o", str(tmp_path / "c.tif"))
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == f"modalseg: Raster '{tmp_path / 'nowhere.tif'}' does not exist"
    overwrite = _cli("segment", "--optical", houses["rgb"], "-o", houses["rgb"])
    assert overwrite.returncode == 1 and "writing it would destroy that input" in overwrite.stderr
    assert "Traceback" not in missing.stderr + overwrite.stderr
    scheduler = _cli("segment", "--optical", houses["rgb"], "-o", str(tmp_path / "c.tif"), "--dask", "localhost")
    assert scheduler.returncode == 1 and "neither local:N nor a scheduler address" in scheduler.stderr
    assert list(tmp_path.iterdir()) == []


def test_segment_a_folder_of_sheets_equals_the_whole_file_and_evaluate_scores_it(tmp_path, houses, capsys):
    sheets = tmp_path / "rgb-sheets"
    sheets.mkdir()
    for i, (x, width) in enumerate(((0, 120), (120, 80))):
        gdal.Translate(str(sheets / f"sheet{i}.tif"), houses["rgb"], srcWin=[x, 0, width, 125])
    assert _segment(houses, tmp_path / "whole") == 0
    output = capsys.readouterr().out
    assert "bound optical" in output and "class 2 building" in output
    assert _segment(dict(houses, rgb=str(sheets)), tmp_path / "sheets") == 0
    for name in ("classes.tif", "probabilities.tif"):
        assert np.array_equal(_read(tmp_path / "whole" / name), _read(tmp_path / "sheets" / name)), name
    capsys.readouterr()
    csv = tmp_path / "scores.csv"
    assert main(["evaluate", str(tmp_path / "whole" / "classes.tif"), "--reference", houses["label"],
                 "--csv", str(csv)]) == 0
    scores = capsys.readouterr().out
    assert "pixels scored" in scores and "building" in scores
    miou = float(scores.split("mIoU ")[1].split(" %")[0])
    assert 50.0 < miou <= 100.0
    assert "building" in csv.read_text()


def test_segment_with_dask_local_workers_writes_the_same_bits(tmp_path, houses):
    pytest.importorskip("distributed")
    assert _segment(houses, tmp_path / "here") == 0
    assert _segment(houses, tmp_path / "dask", "--dask", "local:2") == 0
    for name in ("classes.tif", "probabilities.tif"):
        assert np.array_equal(_read(tmp_path / "here" / name), _read(tmp_path / "dask" / name)), name
    names = {folder: sorted(p.name for p in (tmp_path / folder).iterdir()) for folder in ("here", "dask")}
    assert names["dask"] == names["here"]


def test_models_lists_bundled_packages_inputs_and_held_out_accuracy(capsys):
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "modalseg-sgma-urban" in listing and "(default on ties)" in listing
    assert "inputs: optical RGB and/or nDSM" in listing and "classes: 1 ground / impervious" in listing
    assert "held-out ndsm: mIoU" in listing


def test_models_in_an_empty_folder_fails_in_one_sentence(tmp_path, capsys):
    assert main(["models", "--folder", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"modalseg: No model package in '{tmp_path}'"


def test_output_grid_options_reach_the_engine_and_bad_values_are_refused(tmp_path, houses, capsys):
    x0, px, _, y0, _, py = gdal.Open(houses["rgb"]).GetGeoTransform()
    extent = f"{x0},{y0 + 60 * py},{x0 + 100 * px},{y0}"  # the top-left 100 x 60 px
    assert main(["segment", "--optical", houses["rgb"], "-o", str(tmp_path / "part.tif"), "--output-crs",
                 "EPSG:2154", "--output-extent", extent, "--tile-size", "64", "--overlap", "16"]) == 0
    part = gdal.Open(str(tmp_path / "part.tif"))
    assert (part.RasterXSize, part.RasterYSize) == (100, 60) and part.GetGeoTransform()[0] == x0
    capsys.readouterr()
    assert main(["segment", "--optical", houses["rgb"], "-o", str(tmp_path / "x.tif"), "--output-extent", "1,2,3"]) == 1
    assert "--output-extent '1,2,3' is not xmin,ymin,xmax,ymax" in capsys.readouterr().err
    assert main(["segment", "--optical", houses["rgb"], "-o", str(tmp_path / "x.tif"), "--output-crs", "EPSG:99"]) == 1
    assert "--output-crs 'EPSG:99' is not a CRS GDAL knows" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()


def test_optical_type_reaches_the_binding(tmp_path, shared_data, capsys):
    """A false-colour infrared orthophoto declared on the command line is read as NIR, red, green."""
    irc = shared_data / "point_clouds" / "bdortho_pacasam_792000_6272000_left_irc_north.tif"
    assert main(["segment", "--optical", str(irc), "--optical-type", "irc", "-o", str(tmp_path / "classes.tif"),
                 "--threads", "1"]) == 0
    log = capsys.readouterr()
    text = log.out + log.err
    assert "is false-colour infrared (bands 1,2,3 as near-infrared, red, green)" in text, text
    assert "bands 2,3 as red, green; blue estimated as a copy of green" in text, text
    assert "{rgb,irc}" in " ".join(_cli("segment", "--help").stdout.split())


def test_segment_on_the_cpu_beside_an_nvidia_gpu_says_how_to_get_the_cuda_build(tmp_path, houses, capsys, monkeypatch):
    """This onnxruntime (CI's) has no CUDA provider; the GPU probes are told an NVIDIA GPU is there."""
    from modalseg.environment import probes

    monkeypatch.setattr(probes, "detect_nvidia_gpu", lambda: probes.GpuInfo(True, ["NVIDIA L4"]))
    assert _segment(houses, tmp_path / "auto") == 0
    assert ("Warning: this machine has NVIDIA L4, but the run used the CPU: the installed onnxruntime has no CUDA "
            "support. Install onnxruntime-gpu in place of onnxruntime (pip install onnxruntime-gpu) to run on the "
            "GPU, several times faster.") in capsys.readouterr().out
    assert _segment(houses, tmp_path / "cpu", "--device", "cpu") == 0
    assert "NVIDIA L4" not in capsys.readouterr().out
