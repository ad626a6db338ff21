"""``modalseg:segment``: turn Processing parameters into one engine run, and style its outputs.

This module is a thin adapter: it reads parameters, hands layers, grid, outputs and options to
``engine.run_segmentation`` and maps engine errors to ``QgsProcessingException``. Binding layers
to modalities, alignment, tiling, inference and writing all happen in the engine.
"""
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBand,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDistance,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsRasterLayer,
)
from qgis.PyQt.QtGui import QIcon

from .compat import NUMBER_INTEGER, WKT_PREFERRED_GDAL, mark_advanced, set_help
from .dependencies import missing_packages, missing_packages_message
from .provider import ICON_PATH, PLUGIN_ROOT
from .styling import output_styles, style_when_loaded

BUNDLED_MODELS_DIR = PLUGIN_ROOT / "resources" / "models"
GEOTIFF_SUFFIXES = (".tif", ".tiff")

# Enum parameters store an index; these tuples map it to the engine's vocabulary.
ELEVATION_TYPES: Tuple[Tuple[str, str], ...] = (
    ("auto", "Auto: a DSM when a DTM is given below, else an nDSM"),
    ("dsm", "DSM - surface heights above sea level (m)"),
    ("ndsm", "nDSM - heights above ground (m)"),
)
BLEND_WINDOWS: Tuple[Tuple[str, str], ...] = (
    ("hann", "Hann window (smooth, recommended)"),
    ("linear", "Linear ramp towards tile edges"),
    ("none", "None (uniform weights: plain average of overlapping tiles)"),
)
DEVICES: Tuple[Tuple[str, str], ...] = (
    ("auto", "Auto (CUDA GPU when available, else CPU)"),
    ("cpu", "CPU"),
    ("cuda", "CUDA GPU"),
)
RUNTIMES: Tuple[Tuple[str, str], ...] = (
    ("onnx", "ONNX Runtime (needs onnxruntime)"),
    ("torch", "PyTorch (needs torch and the package's torch weights)"),
)
WARNING_PREFIX = "Warning: "  # how the engine's log marks a warning
NO_BUNDLED_MODEL = "(no bundled model found: choose a model file below)"


def _labels(choices: Sequence[Tuple[str, str]]) -> List[str]:
    return [label for _, label in choices]


class SegmentAlgorithm(QgsProcessingAlgorithm):
    """Segment co-registered (or not) rasters of several modalities with a model package."""

    OPTICAL = "OPTICAL"
    OPTICAL_BANDS = "OPTICAL_BANDS"
    ELEVATION = "ELEVATION"
    ELEVATION_BAND = "ELEVATION_BAND"
    ELEVATION_TYPE = "ELEVATION_TYPE"
    DTM = "DTM"
    SAR = "SAR"
    SAR_BANDS = "SAR_BANDS"
    NIR = "NIR"
    NIR_BAND = "NIR_BAND"
    MODEL = "MODEL"
    MODEL_FILE = "MODEL_FILE"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BLEND = "BLEND"
    BATCH_SIZE = "BATCH_SIZE"
    DEVICE = "DEVICE"
    RUNTIME = "RUNTIME"
    OUTPUT_CRS = "OUTPUT_CRS"
    OUTPUT_EXTENT = "OUTPUT_EXTENT"
    OUTPUT_RESOLUTION = "OUTPUT_RESOLUTION"
    MIN_MAPPING_UNIT = "MIN_MAPPING_UNIT"
    OUTPUT = "OUTPUT"
    ROBUSTNESS = "ROBUSTNESS"
    PROBABILITIES = "PROBABILITIES"
    CONFIDENCE = "CONFIDENCE"

    # Modality key for the engine -> (layer parameter, band parameter).
    MODALITY_PARAMETERS = (
        ("optical", OPTICAL, OPTICAL_BANDS),
        ("elevation", ELEVATION, ELEVATION_BAND),
        ("dtm", DTM, None),
        ("sar", SAR, SAR_BANDS),
        ("nir", NIR, NIR_BAND),
    )
    INPUT_LAYER_PARAMETERS = (OPTICAL, ELEVATION, SAR, NIR)  # the DTM only refines the elevation

    def __init__(self) -> None:
        super().__init__()
        self._bundled: List[Tuple[Path, Any]] = []

    # -- identity -------------------------------------------------------------------------
    def name(self) -> str:
        return "segment"

    def displayName(self) -> str:  # noqa: N802 - QGIS API name
        return "Segment rasters (multimodal)"

    def group(self) -> str:
        return "Segmentation"

    def groupId(self) -> str:  # noqa: N802 - QGIS API name
        return "segmentation"

    def tags(self) -> List[str]:
        return ["segmentation", "classification", "deep learning", "land cover", "dsm", "ndsm", "lidar",
                "sar", "nir", "multimodal", "robustness", "onnx"]

    def icon(self) -> QIcon:
        return QIcon(str(ICON_PATH))

    def createInstance(self) -> "SegmentAlgorithm":  # noqa: N802 - QGIS API name
        return SegmentAlgorithm()

    def shortDescription(self) -> str:  # noqa: N802 - QGIS API name
        return "Classifies rasters of several sensors with a segmentation network and maps each sensor's share."

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API name
        return (
            "<p>Classifies every pixel of an area from the raster layers you have for it - an optical "
            "image, a DSM or nDSM (optionally with a DTM), a SAR scene, a NIR band - with a multimodal "
            "segmentation network, and maps how much each input drove the decision.</p>"
            "<p><b>Inputs.</b> Give at least one layer. The model decides which inputs it uses and which "
            "it requires; the log says how each layer was bound (e.g. <i>optical &larr; ortho.tif bands "
            "1,2,3</i>). Leave a band selection empty to use the bands in the layer's order. Layers may "
            "have different CRS, pixel sizes and extents: they are read through one common grid, by "
            "default the optical layer's (else the first layer's).</p>"
            "<p><b>Model.</b> Pick a bundled model package, or point <i>Model file</i> to any ModalSeg "
            "package (.onnx with its .json beside it); the file wins over the list.</p>"
            "<p><b>Outputs.</b> <i>Classified raster</i>: one byte per pixel, class names and colours "
            "from the model, nodata outside the valid data. <i>Robustness</i>: one band per modality "
            "used (band description = modality), the share (0-1) of each modality in the decision; "
            "the shares sum to 1 per pixel. <i>Class probabilities</i> (one band per class) and "
            "<i>Confidence</i> (top probability) are optional. All outputs are GeoTIFF.</p>"
            "<p><b>Advanced.</b> Tile size and overlap default to the model's; the blend window "
            "weights overlapping tiles so seams vanish. The network runs on a CUDA GPU when one is "
            "available (device <i>auto</i>).</p>"
            "<p>Requires the Python package <i>onnxruntime</i> (and <i>torch</i> for the PyTorch runtime).</p>"
        )

    def helpUrl(self) -> str:  # noqa: N802 - QGIS API name
        return "https://github.com/modalseg/modalseg#readme"

    # -- parameters -----------------------------------------------------------------------
    def _bundled_packages(self) -> List[Tuple[Path, Any]]:
        """Bundled model packages as (onnx path, metadata); empty when the engine can't be imported."""
        try:
            from ..engine import list_packages
        except ImportError:
            return []  # processAlgorithm reports the import problem with a full message
        if not BUNDLED_MODELS_DIR.is_dir():
            return []
        return list(list_packages(BUNDLED_MODELS_DIR))

    def initAlgorithm(self, config: Optional[Dict[str, Any]] = None) -> None:  # noqa: N802 - QGIS API name
        self._bundled = self._bundled_packages()

        def add(parameter, help_text: str, advanced: bool = False) -> None:
            set_help(parameter, help_text)
            if advanced:
                mark_advanced(parameter)
            self.addParameter(parameter)

        add(QgsProcessingParameterRasterLayer(self.OPTICAL, "Optical image (RGB or multispectral)", optional=True),
            "Orthophoto or satellite image; the model says how many bands it expects (usually red, green, blue).")
        add(QgsProcessingParameterBand(self.OPTICAL_BANDS, "Optical bands, in the model's order (empty = 1, 2, 3...)",
                                       None, self.OPTICAL, optional=True, allowMultiple=True),
            "Band numbers of the optical layer in the order the model expects them, e.g. 1,2,3 for R,G,B.")
        add(QgsProcessingParameterRasterLayer(self.ELEVATION, "Elevation: DSM or nDSM (metres)", optional=True),
            "Digital surface model (heights above sea level) or normalised DSM (heights above ground), in metres.")
        add(QgsProcessingParameterBand(self.ELEVATION_BAND, "Elevation band (empty = band 1)", None,
                                       self.ELEVATION, optional=True),
            "Band of the elevation layer holding the heights.")
        add(QgsProcessingParameterEnum(self.ELEVATION_TYPE, "Elevation layer type", _labels(ELEVATION_TYPES),
                                       defaultValue=0),
            "Whether the elevation layer is a DSM or an nDSM. With a DTM below, a DSM is turned into an "
            "nDSM (DSM - DTM) for models that expect one.")
        add(QgsProcessingParameterRasterLayer(self.DTM, "Terrain model: DTM (metres)", optional=True),
            "Digital terrain model (bare-earth heights), used only to derive an nDSM from a DSM.")
        add(QgsProcessingParameterRasterLayer(self.SAR, "SAR image (intensity, dB or linear)", optional=True),
            "Radar backscatter image; the model's package says which polarisations and units it expects.")
        add(QgsProcessingParameterBand(self.SAR_BANDS, "SAR bands, in the model's order (empty = 1, 2...)",
                                       None, self.SAR, optional=True, allowMultiple=True),
            "Band numbers of the SAR layer, in the order the model expects (e.g. VV, VH).")
        add(QgsProcessingParameterRasterLayer(self.NIR, "Near-infrared image", optional=True),
            "A near-infrared band, when it is a separate layer from the optical image.")
        add(QgsProcessingParameterBand(self.NIR_BAND, "NIR band (empty = band 1)", None, self.NIR, optional=True),
            "Band of the NIR layer holding near-infrared reflectance.")

        model_labels = [self._package_label(meta) for _, meta in self._bundled] or [NO_BUNDLED_MODEL]
        add(QgsProcessingParameterEnum(self.MODEL, "Model (bundled package)", model_labels, defaultValue=0),
            "Model packages shipped with the plugin, with the inputs each one uses.")
        add(QgsProcessingParameterFile(self.MODEL_FILE, "Model file (.onnx package; overrides the list above)",
                                       extension="onnx", optional=True),
            "A ModalSeg model package: the .onnx graph with its .json metadata beside it, e.g. one written "
            "by fine-tuning.")

        add(QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size (pixels; 0 = model default)", NUMBER_INTEGER,
                                         defaultValue=0, minValue=0),
            "Side of the square tiles the network sees. Larger tiles give more context and use more memory.",
            advanced=True)
        add(QgsProcessingParameterNumber(self.OVERLAP, "Tile overlap (pixels; -1 = model default)", NUMBER_INTEGER,
                                         defaultValue=-1, minValue=-1),
            "How much neighbouring tiles overlap; overlapping predictions are blended.", advanced=True)
        add(QgsProcessingParameterEnum(self.BLEND, "Blend window for overlapping tiles", _labels(BLEND_WINDOWS),
                                       defaultValue=0),
            "Weights given to a tile's pixels when overlapping tiles are averaged; smooth windows hide seams.",
            advanced=True)
        add(QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size (tiles per network call)", NUMBER_INTEGER,
                                         defaultValue=4, minValue=1, maxValue=256),
            "Tiles processed together; raise it on a large GPU, lower it if memory runs out.", advanced=True)
        add(QgsProcessingParameterEnum(self.DEVICE, "Device", _labels(DEVICES), defaultValue=0),
            "Where the network runs. 'CUDA GPU' fails with a message if no usable GPU is found.", advanced=True)
        add(QgsProcessingParameterEnum(self.RUNTIME, "Runtime", _labels(RUNTIMES), defaultValue=0),
            "ONNX Runtime needs only the package's .onnx file; PyTorch needs torch and the package's weights.",
            advanced=True)
        add(QgsProcessingParameterCrs(self.OUTPUT_CRS, "Output CRS (empty = reference layer's CRS)", optional=True),
            "Coordinate reference system of the outputs; every input is reprojected to it on the fly.",
            advanced=True)
        add(QgsProcessingParameterExtent(self.OUTPUT_EXTENT, "Output extent (empty = reference layer's extent)",
                                         optional=True),
            "Area to segment; it is reprojected to the output CRS when needed.", advanced=True)
        add(QgsProcessingParameterDistance(self.OUTPUT_RESOLUTION,
                                           "Output pixel size (output CRS units; 0 = reference layer's)",
                                           defaultValue=0.0, parentParameterName=self.OUTPUT_CRS, minValue=0.0),
            "Pixel size of the outputs. The network itself runs at a pixel size inside the model's "
            "training range and its results are resampled to this grid.", advanced=True)
        add(QgsProcessingParameterNumber(self.MIN_MAPPING_UNIT, "Minimum mapping unit (pixels; 0 = off)",
                                         NUMBER_INTEGER, defaultValue=0, minValue=0),
            "Patches of one class smaller than this many pixels are merged into their surroundings.",
            advanced=True)

        add(QgsProcessingParameterRasterDestination(self.OUTPUT, "Classified raster"),
            "One byte per pixel with the model's class values, names and colours (GeoTIFF).")
        add(QgsProcessingParameterRasterDestination(self.ROBUSTNESS, "Robustness (share of each modality, 0-1)",
                                                    optional=True, createByDefault=True),
            "One band per modality used; each band is that modality's share of the decision (bands sum to 1).")
        add(QgsProcessingParameterRasterDestination(self.PROBABILITIES, "Class probabilities (0-1)",
                                                    optional=True, createByDefault=False),
            "One band per class with its blended probability.")
        add(QgsProcessingParameterRasterDestination(self.CONFIDENCE, "Confidence (top class probability, 0-1)",
                                                    optional=True, createByDefault=False),
            "Probability of the chosen class; low values flag doubtful areas.")

    @staticmethod
    def _package_label(metadata: Any) -> str:
        inputs = " + ".join(spec.name + ("" if spec.required else "?") for spec in metadata.modalities)
        return f"{metadata.name} {metadata.version} ({inputs})"

    def checkParameterValues(self, parameters: Dict[str, Any],  # noqa: N802 - QGIS API name
                             context: QgsProcessingContext) -> Tuple[bool, str]:
        if not any(self._is_set(parameters, name) for name in self.INPUT_LAYER_PARAMETERS):
            return False, ("Give at least one input layer (optical, elevation, SAR or NIR); "
                           "the model decides which of them it uses.")
        return super().checkParameterValues(parameters, context)

    @staticmethod
    def _is_set(parameters: Dict[str, Any], name: str) -> bool:
        value = parameters.get(name)
        return value is not None and value != "" and not (hasattr(value, "isNull") and value.isNull())

    # -- run ------------------------------------------------------------------------------
    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: Optional[QgsProcessingFeedback]) -> Dict[str, Any]:
        feedback = feedback or QgsProcessingFeedback()
        runtime = RUNTIMES[self.parameterAsEnum(parameters, self.RUNTIME, context)][0]
        needed = ["numpy", "onnxruntime"] + (["torch"] if runtime == "torch" else [])
        missing = missing_packages(needed)
        if missing:
            raise QgsProcessingException(missing_packages_message(missing, f"the {runtime} runtime"))
        try:
            from .. import engine
        except ImportError as exc:
            raise QgsProcessingException(
                f"The ModalSeg engine could not be loaded ({exc}). Reinstall the plugin or install the "
                f"missing Python package.") from exc

        model_path = self._model_path(parameters, context)
        try:
            package, failure = engine.load_package(model_path), None
        except engine.PackageError as exc:
            package, failure = None, str(exc)
        if package is None:  # raised outside the except block: see the note after run_segmentation
            raise QgsProcessingException(failure)
        feedback.pushInfo(f"Model: {package.metadata.name} {package.metadata.version} "
                          f"({package.metadata.architecture}) from {package.onnx_path}")

        layers = self._layer_inputs(engine, parameters, context)
        if not any(key != "dtm" for key in layers):
            raise QgsProcessingException("Give at least one input layer (optical, elevation, SAR or NIR); "
                                         "the model decides which of them it uses.")
        outputs = self._output_paths(engine, parameters, context)
        for path in (outputs.classes, outputs.robustness, outputs.probabilities, outputs.confidence):
            if path:  # Processing users expect a typed-in output folder to be created for them
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            sources, binding_messages = engine.bind_modalities(package.metadata, layers)
            for message in binding_messages:
                feedback.pushInfo(message)
            report = engine.run_segmentation(
                sources, package, self._grid_request(engine, parameters, context, layers), outputs,
                self._run_options(engine, parameters, context, runtime),
                progress=lambda fraction, message: self._report_progress(feedback, fraction, message),
                log=lambda text: self._log(feedback, text),
                is_cancelled=feedback.isCanceled)
        except engine.Cancelled:
            failure = "Cancelled by the user"
        except (engine.EngineError, engine.PackageError) as exc:
            failure = str(exc)
        else:
            failure = None
        # Raised outside the except blocks on purpose: the engine's exception (and its traceback,
        # which holds the runtime session of the failed run) is released here. Kept alive as
        # __context__ of our exception, it would outlive QGIS and crash the process at exit.
        # The engine itself leaves no output behind on failure or cancel.
        if failure is not None:
            raise QgsProcessingException(failure)

        self._log_report(feedback, package.metadata, report)
        styles = output_styles((c.value, c.name, c.color) for c in package.metadata.classes)
        results: Dict[str, Any] = {}
        for name, path in ((self.OUTPUT, outputs.classes), (self.ROBUSTNESS, outputs.robustness),
                           (self.PROBABILITIES, outputs.probabilities), (self.CONFIDENCE, outputs.confidence)):
            results[name] = path
            if path:
                style_when_loaded(context, path, styles[name])
        return results

    def _model_path(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> str:
        model_file = self.parameterAsFile(parameters, self.MODEL_FILE, context)
        if model_file:
            if not os.path.exists(model_file):
                raise QgsProcessingException(f"Model file '{model_file}' does not exist.")
            return model_file
        index = self.parameterAsEnum(parameters, self.MODEL, context)
        if not self._bundled:
            raise QgsProcessingException(
                f"No bundled model package was found in '{BUNDLED_MODELS_DIR}'; choose a model file "
                f"(a ModalSeg .onnx package).")
        if not 0 <= index < len(self._bundled):
            raise QgsProcessingException(f"Model number {index} does not exist; there are "
                                         f"{len(self._bundled)} bundled models (0 to {len(self._bundled) - 1}).")
        return str(self._bundled[index][0])

    def _layer_inputs(self, engine: Any, parameters: Dict[str, Any],
                      context: QgsProcessingContext) -> Dict[str, Any]:
        elevation_type = ELEVATION_TYPES[self.parameterAsEnum(parameters, self.ELEVATION_TYPE, context)][0]
        layers: Dict[str, Any] = {}
        for key, layer_parameter, band_parameter in self.MODALITY_PARAMETERS:
            if not self._is_set(parameters, layer_parameter):
                continue
            layer = self.parameterAsRasterLayer(parameters, layer_parameter, context)
            if layer is None or not layer.isValid():
                raise QgsProcessingException(
                    f"The {key} input '{parameters.get(layer_parameter)}' could not be opened as a raster layer.")
            source = self._gdal_source(layer, key)
            bands = None
            if band_parameter is not None:
                chosen = [b for b in self.parameterAsInts(parameters, band_parameter, context) if b > 0]
                bands = tuple(chosen) or None
            if key == "elevation":
                layers[key] = engine.LayerInput(source, bands=bands, elevation_type=elevation_type)
            else:
                layers[key] = engine.LayerInput(source, bands=bands)
        return layers

    @staticmethod
    def _gdal_source(layer: QgsRasterLayer, key: str) -> str:
        if layer.providerType() != "gdal":
            raise QgsProcessingException(
                f"The {key} layer '{layer.name()}' comes from the '{layer.providerType()}' data provider; "
                f"ModalSeg reads rasters through GDAL files. Save it as a GeoTIFF first "
                f"(Raster > Conversion > Translate) and use that.")
        return layer.source()

    def _output_paths(self, engine: Any, parameters: Dict[str, Any], context: QgsProcessingContext) -> Any:
        paths: Dict[str, Optional[str]] = {}
        for name in (self.OUTPUT, self.ROBUSTNESS, self.PROBABILITIES, self.CONFIDENCE):
            path = self.parameterAsOutputLayer(parameters, name, context) if self._is_set(parameters, name) else None
            if path and not path.lower().endswith(GEOTIFF_SUFFIXES):
                raise QgsProcessingException(
                    f"ModalSeg writes GeoTIFF only; give the output '{name}' a .tif file name instead of '{path}'.")
            paths[name] = path or None
        if not paths[self.OUTPUT]:
            raise QgsProcessingException("The classified raster output (OUTPUT) needs a file name.")
        return engine.OutputPaths(classes=paths[self.OUTPUT], robustness=paths[self.ROBUSTNESS],
                                  probabilities=paths[self.PROBABILITIES], confidence=paths[self.CONFIDENCE])

    def _grid_request(self, engine: Any, parameters: Dict[str, Any], context: QgsProcessingContext,
                      layers: Dict[str, Any]) -> Any:
        crs = self.parameterAsCrs(parameters, self.OUTPUT_CRS, context) if self._is_set(
            parameters, self.OUTPUT_CRS) else QgsCoordinateReferenceSystem()
        extent = extent_crs = None
        if self._is_set(parameters, self.OUTPUT_EXTENT):
            rectangle = self.parameterAsExtent(parameters, self.OUTPUT_EXTENT, context)
            if rectangle.isNull() or rectangle.isEmpty():
                raise QgsProcessingException("The output extent is empty.")
            extent = (rectangle.xMinimum(), rectangle.yMinimum(), rectangle.xMaximum(), rectangle.yMaximum())
            extent_crs = self.parameterAsExtentCrs(parameters, self.OUTPUT_EXTENT, context)
        resolution = self.parameterAsDouble(parameters, self.OUTPUT_RESOLUTION, context)
        return engine.GridRequest(
            crs_wkt=crs.toWkt(WKT_PREFERRED_GDAL) if crs.isValid() else None, extent=extent,
            extent_crs_wkt=extent_crs.toWkt(WKT_PREFERRED_GDAL) if extent_crs and extent_crs.isValid() else None,
            resolution=resolution if resolution > 0 else None)

    def _run_options(self, engine: Any, parameters: Dict[str, Any], context: QgsProcessingContext,
                     runtime: str) -> Any:
        tile_size = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        overlap = self.parameterAsInt(parameters, self.OVERLAP, context)
        return engine.RunOptions(
            tile_size=tile_size if tile_size > 0 else None,
            overlap=overlap if overlap >= 0 else None,
            batch_size=max(1, self.parameterAsInt(parameters, self.BATCH_SIZE, context)),
            device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)][0],
            runtime=runtime,
            blend=BLEND_WINDOWS[self.parameterAsEnum(parameters, self.BLEND, context)][0],
            min_mapping_unit=self.parameterAsInt(parameters, self.MIN_MAPPING_UNIT, context))

    @staticmethod
    def _report_progress(feedback: QgsProcessingFeedback, fraction: float, message: str) -> None:
        feedback.setProgress(100.0 * min(max(fraction, 0.0), 1.0))
        if message:
            feedback.setProgressText(message)

    @staticmethod
    def _log_report(feedback: QgsProcessingFeedback, metadata: Any, report: Any) -> None:
        feedback.pushInfo(f"Ran {report.tiles} tiles on {report.device} in {report.seconds:.1f} s.")
        names = {c.value: c.name for c in metadata.classes}
        total = sum(report.class_counts.values()) or 1
        for value, count in sorted(report.class_counts.items()):
            feedback.pushInfo(f"  class {value} {names.get(value, '?')}: {count} px ({100.0 * count / total:.1f} %)")

    @staticmethod
    def _log(feedback: QgsProcessingFeedback, text: str) -> None:
        """Engine log lines; its warnings (prefixed 'Warning: ') are shown as warnings."""
        if text.startswith(WARNING_PREFIX):
            if hasattr(feedback, "pushWarning"):  # QGIS 3.28+
                feedback.pushWarning(text)
            else:
                feedback.reportError(text, False)
        else:
            feedback.pushInfo(text)
