"""segment in QGIS relays the engine's trust warnings as Processing warnings, and they name the
fine-tune algorithm as the toolbox shows it."""
import shutil

from modalseg.engine.package import load_package
from modalseg.engine.trust import FINETUNE_HINT
from modalseg.models.held_out import store_metrics
from tests.fixtures.paths import REPO_ROOT
from tests.plugin.helpers import recording_feedback

DEFAULT = REPO_ROOT / "resources" / "models" / "modalseg-sgma-urban"


def test_the_hint_names_the_registered_finetune_algorithm(qgis_app):
    from qgis.core import QgsApplication

    algorithm = QgsApplication.processingRegistry().algorithmById("modalseg:finetune")
    assert f"with '{algorithm.displayName()}' ({algorithm.id()})" in FINETUNE_HINT


def test_segment_warns_about_low_held_out_accuracy(qgis_app, shared_data, tmp_path):
    import processing

    folder = tmp_path / DEFAULT.name
    shutil.copytree(DEFAULT, folder)
    store_metrics(load_package(folder), {"held_out": {"protocol": "test", "subsets": {
        "optical": {"miou": 31.4, "per_class": {"1": 62.8}, "pixels": 1000}}}})
    feedback = recording_feedback()
    processing.run("modalseg:segment", {
        "OPTICAL": str(shared_data / "point_clouds" / "bdortho_pacasam_792000_6272000_left_rgb_south.tif"),
        "MODEL_FILE": str(folder / f"{DEFAULT.name}.onnx"), "OUTPUT": str(tmp_path / "classes.tif")},
        feedback=feedback)
    assert any(w.endswith("optical-only accuracy of this model is low (31.4 % mIoU on held-out areas); "
                          + FINETUNE_HINT) for w in feedback.warnings), feedback.warnings
    assert any("held-out accuracy of model 'modalseg-sgma-urban' with optical-only input: mIoU 31.4 %" in i
               for i in feedback.infos)
