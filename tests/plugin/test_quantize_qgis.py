"""``modalseg:quantize`` through QGIS Processing: a copy of the default package with its int8 graph,
calibrated and scored on the shared houses tile, then run by ``segment`` with precision int8."""
import pytest

from modalseg.engine.vocabulary import ELEVATION_TYPES, PRECISIONS, VARIANTS, keys
from tests.plugin.helpers import BUNDLED_MODELS, recording_feedback

NAME = "modalseg-sgma-urban"


@pytest.fixture(scope="module")
def houses(shared_data) -> dict:
    stem = shared_data / "lidarhd_houses" / "lidarprod_870000_6618000"
    return {part: str(stem) + f"_{part}.tif" for part in ("rgb", "ndsm", "label")}


def test_quantize_writes_a_package_that_segment_runs_in_int8(qgis_app, houses, tmp_path):
    import processing
    from modalseg.engine import load_package
    from modalseg.engine.package import file_sha256, load_variant

    source = BUNDLED_MODELS / NAME / f"{NAME}.onnx"
    before = file_sha256(source)
    feedback = recording_feedback()
    out = processing.run("modalseg:quantize", {
        "OPTICAL": houses["rgb"], "ELEVATION": houses["ndsm"], "ELEVATION_TYPE": keys(ELEVATION_TYPES).index("ndsm"), "LABEL_RASTER": houses["label"],
        "MODEL_FILE": str(source), "PRECISION": keys(VARIANTS).index("int8"), "TILES": 4,
        "OUTPUT": str(tmp_path / "int8-package")}, feedback=feedback)
    assert file_sha256(source) == before  # the source package is never changed
    assert out["OUTPUT"] == str(tmp_path / "int8-package")
    assert out["MODEL_OUT"] == str(tmp_path / "int8-package" / f"{NAME}.int8.onnx")
    variant = load_variant(load_package(out["OUTPUT"]), "int8")
    # shared sample data are recorded relative to their folder, the same on every machine
    calibration = variant.metadata.extra["precision"]["calibration"]["layers"][0]
    assert calibration["labels"] == "shared/data/lidarhd_houses/lidarprod_870000_6618000_label.tif"
    log = "\n".join(feedback.infos)
    assert "optical+ndsm: " in log and "% of the pixels get the same class as with the fp32 graph, mIoU" in log, log

    feedback = recording_feedback()
    processing.run("modalseg:segment", {
        "OPTICAL": houses["rgb"], "ELEVATION": houses["ndsm"], "MODEL_FILE": out["MODEL_OUT"].replace(".int8", ""),
        "PRECISION": keys(PRECISIONS).index("int8"), "OUTPUT": str(tmp_path / "classes.tif")}, feedback=feedback)
    log = "\n".join(feedback.infos)
    assert f"int8 graph '{NAME}.int8.onnx' (as requested)" in log, log


def test_quantize_refuses_a_folder_that_is_not_empty(qgis_app, houses, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(QgsProcessingException, match="is not empty; choose a new or empty folder"):
        processing.run("modalseg:quantize", {
            "ELEVATION": houses["ndsm"], "MODEL_FILE": str(BUNDLED_MODELS / NAME / f"{NAME}.onnx"),
            "OUTPUT": str(tmp_path / "busy")})
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
