"""Processing enums are the engine's vocabularies: same choices in the same order, and the position
a saved model or batch row holds reaches the engine as that position's key."""
import pytest

from modalseg.engine.vocabulary import (BLEND_WINDOWS, DEVICES, ELEVATION_TYPES, OPTICAL_TYPES, PRECISIONS, RUNTIMES,
                                        SAR_SCALES, VARIANTS, keys, labels)
from modalseg.environment.choices import ACTIONS, BUILDS
from tests.plugin.helpers import recording_feedback

ENUMS = [("modalseg:segment", "DEVICE", DEVICES), ("modalseg:segment", "RUNTIME", RUNTIMES),
         ("modalseg:segment", "BLEND", BLEND_WINDOWS), ("modalseg:segment", "ELEVATION_TYPE", ELEVATION_TYPES),
         ("modalseg:segment", "PRECISION", PRECISIONS), ("modalseg:quantize", "PRECISION", VARIANTS),
         ("modalseg:segment", "SAR_SCALE", SAR_SCALES), ("modalseg:segment", "OPTICAL_TYPE", OPTICAL_TYPES),
         ("modalseg:finetune", "OPTICAL_TYPE", OPTICAL_TYPES),
         ("modalseg:finetune", "DEVICE", DEVICES), ("modalseg:finetune", "ELEVATION_TYPE", ELEVATION_TYPES),
         ("modalseg:install_dependencies", "ACTION", ACTIONS), ("modalseg:install_dependencies", "BUILD", BUILDS)]


@pytest.mark.parametrize("algorithm_id,parameter,choices", ENUMS)
def test_enum_lists_the_vocabulary_in_order(qgis_app, algorithm_id, parameter, choices):
    from qgis.core import QgsApplication

    algorithm = QgsApplication.processingRegistry().algorithmById(algorithm_id)
    assert algorithm is not None, algorithm_id
    definition = algorithm.parameterDefinition(parameter)
    assert definition.options() == labels(choices)
    assert definition.defaultValue() == 0  # the first choice, whatever language the labels are in


def test_enum_positions_reach_the_engine_as_their_keys(qgis_app, demo, model_package, tmp_path):
    """The last blend window, the CPU and the nDSM elevation type, given by position as a .model3 would."""
    import processing

    blend = len(BLEND_WINDOWS) - 1
    feedback = recording_feedback()
    processing.run("modalseg:segment", {
        "OPTICAL": demo["rgb"], "ELEVATION": demo["ndsm"], "MODEL_FILE": str(model_package),
        "ELEVATION_TYPE": keys(ELEVATION_TYPES).index("ndsm"), "DEVICE": keys(DEVICES).index("cpu"),
        "RUNTIME": keys(RUNTIMES).index("onnx"), "BLEND": blend, "OUTPUT": str(tmp_path / "classes.tif")},
        feedback=feedback)
    log = "\n".join(feedback.infos)
    assert f"blend '{keys(BLEND_WINDOWS)[blend]}'" in log, log
    assert "running on CPU (onnxruntime" in log, log
    bound = [line for line in feedback.infos if line.startswith("bound ") and demo["ndsm"] in line]
    assert bound and "minus DTM" not in bound[0], log  # an nDSM is fed as it is
