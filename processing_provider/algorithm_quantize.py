"""``modalseg:quantize``: write an int8 (or fp16) copy of a model package, calibrated on the analyst's layers.

Thin adapter over ``models.quantize.quantize_package``: layers are bound to modalities exactly as
``segment`` binds them (its parameter helpers are reused), the optional label raster scores the
accuracy cost, progress and log are wired to the feedback. The source package is never changed.
"""
from typing import Any, Dict, Optional

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from ..engine.vocabulary import VARIANTS, key_at, labels
from .base import gdal_raster_path, is_set
from .compat import NUMBER_INTEGER
from .dependencies import missing_packages, missing_packages_message
from .model_inputs import LayersAndModelAlgorithm


class QuantizeAlgorithm(LayersAndModelAlgorithm):
    """Make the faster int8 graph of a package (or its fp16 graph for GPUs), with its measured accuracy cost."""

    ALGORITHM_ID = "quantize"
    DISPLAY_NAME = "Quantise a model (int8 for CPUs, fp16 for GPUs)"
    GROUP = "Training"
    GROUP_ID = "training"
    TAGS = ("quantise", "quantize", "int8", "fp16", "speed", "cpu", "gpu", "onnx", "model", "package")
    LABEL_RASTER = "LABEL_RASTER"
    PRECISION = "PRECISION"
    TILES = "TILES"
    OUTPUT = "OUTPUT"
    MODEL_OUT = "MODEL_OUT"

    def shortDescription(self) -> str:  # noqa: N802 - QGIS API name
        return "Writes a copy of a model package with an int8 graph (faster on CPUs) or an fp16 graph (GPUs)."

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API name
        return (
            "<p>Writes a copy of a model package that also holds a lower-precision graph, which "
            "<i>Segment rasters</i> runs with precision <i>auto</i>: <b>int8</b> on the CPU, <b>fp16</b> on "
            "a CUDA GPU. The source package is never changed; the output folder must be new or empty.</p>"
            "<p><b>Calibration layers</b> are bound to the model's inputs exactly as in <i>Segment "
            "rasters</i> and read the same way (grid, normalisation, tiles). int8 ranges are measured on up "
            "to <i>Calibration tiles</i> tiles of them, each with every combination of the inputs given, as "
            "the model sees them when a layer is missing. Give layers like those the model will run on.</p>"
            "<p><b>Accuracy cost.</b> Both graphs then segment the calibration layers whole, per "
            "combination of inputs; the log and the package metadata give the class agreement between "
            "them and, with a <i>label raster</i> on the same grid as the first layer, the mIoU of each and "
            "the difference. Measured on the calibration area, this cost is optimistic; check it on an "
            "area the calibration did not see.</p>"
            "<p><b>What stays in float:</b> the softmax over modalities (the robustness shares still sum "
            "to 1), attention, normalisation, resizing and convolutions with few input channels; only the "
            "other convolutions run in int8 (ONNX Runtime static quantisation, QDQ, per-channel weights). "
            "fp16 needs no calibration layers beyond one to check the cost.</p>"
            "<p>Requires the Python packages <i>onnx</i> and <i>onnxruntime</i> (and "
            "<i>onnxconverter-common</i> for fp16).</p>")

    def initAlgorithm(self, config: Optional[Dict[str, Any]] = None) -> None:  # noqa: N802 - QGIS API name
        add = self.add
        self.add_modality_parameters()
        add(QgsProcessingParameterRasterLayer(self.LABEL_RASTER, "Labels (raster, optional)", optional=True),
            "Class values on the grid of the first layer; the accuracy cost (mIoU of each graph) is measured "
            "against them.")
        self.add_model_parameters(
            "Model to quantise (bundled package)", "Model file to quantise (.onnx; overrides the list)",
            "The package whose graph is quantised; the output is a copy of it with the new graph beside.",
            "Any ModalSeg package (.onnx with its .json beside it).")
        add(QgsProcessingParameterEnum(self.PRECISION, "Precision", labels(VARIANTS), defaultValue=0),
            "int8 for CPUs (calibrated on the layers above), fp16 for CUDA GPUs.")
        add(QgsProcessingParameterNumber(self.TILES, "Calibration tiles (at most)", NUMBER_INTEGER,
                                         defaultValue=48, minValue=1, maxValue=1000),
            "Tiles of the model's size read from the layers to measure int8 ranges; more is slower and "
            "rarely better.", advanced=True)
        add(QgsProcessingParameterFolderDestination(self.OUTPUT, "Output package folder"),
            "A new or empty folder; it receives the package's files and the new graph.")
        self.addOutput(QgsProcessingOutputFile(self.MODEL_OUT, "Quantised graph (.onnx)"))

    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: Optional[QgsProcessingFeedback]) -> Dict[str, Any]:
        feedback = feedback or QgsProcessingFeedback()
        precision = key_at(VARIANTS, self.parameterAsEnum(parameters, self.PRECISION, context))
        missing = missing_packages(["numpy", "onnxruntime", "onnx"] +
                                   (["onnxconverter_common"] if precision == "fp16" else []))
        if missing:
            raise QgsProcessingException(missing_packages_message(missing, "quantisation"))
        from .. import engine
        from ..models.quantize import LayerSet, quantize_package

        layers = self.layer_inputs(engine, parameters, context)
        labels_path = None
        if is_set(parameters, self.LABEL_RASTER):
            labels_path = gdal_raster_path(self.parameterAsRasterLayer(parameters, self.LABEL_RASTER, context),
                                           "label raster")
        model = self.model_path(engine, parameters, context, feedback)
        output = self.parameterAsString(parameters, self.OUTPUT, context)
        try:
            report, failure = quantize_package(
                model, [LayerSet(layers, labels_path)], precision, output,
                self.parameterAsInt(parameters, self.TILES, context),
                log=lambda text: self.engine_log(feedback, text),
                progress=lambda fraction, text: self.report_progress(feedback, fraction, text)), None
        except (engine.EngineError, engine.PackageError) as exc:
            report, failure = None, str(exc)
        if report is None:  # raised outside the except block: nothing of the failed run stays alive
            raise QgsProcessingException(failure[0].upper() + failure[1:] + ".")
        for subset, row in report.accuracy_cost["subsets"].items():
            cost = (f", mIoU {row['fp32_miou']} -> {row['miou']} (cost {row['miou_cost']})"
                    if "miou" in row else "")
            feedback.pushInfo(f"{subset}: {row['class_agreement']} % of the pixels get the same class as with "
                              f"the fp32 graph{cost}")
        return {self.OUTPUT: str(report.package), self.MODEL_OUT: str(report.variant)}
