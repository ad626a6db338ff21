"""Parameters shared by the algorithms that run a model on the analyst's layers (segment, finetune):
one raster per modality role with its bands, and the model package (bundled list or file)."""
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBand,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterLayer,
)

from ..engine.vocabulary import ELEVATION_TYPES, key_at, labels
from .base import ModalSegAlgorithm, gdal_raster_path, is_set, log_warning
from .paths import BUNDLED_MODELS_DIR

NO_BUNDLED_MODEL = "(no bundled model found: choose a model file below)"
# First in the list, hence the default: the any-modality network with robustness maps, which also
# scores best on the elevation-only towns (benchmarks/accuracy).
DEFAULT_BUNDLED_MODEL = "modalseg-sgma-urban"
WARNING_PREFIX = "Warning: "  # how engine log lines mark a warning
NO_LAYER_MESSAGE = ("Give at least one input layer (optical, elevation, SAR or NIR); "
                    "the model decides which of them it uses.")


class LayersAndModelAlgorithm(ModalSegAlgorithm):
    """Base of algorithms that bind layers to a model package's modalities."""

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
    # Engine role -> (layer parameter, band parameter).
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

    # -- parameters ---------------------------------------------------------------------------
    def add_modality_parameters(self) -> None:
        self.add(QgsProcessingParameterRasterLayer(self.OPTICAL, "Optical image (RGB or multispectral)",
                                                   optional=True),
                 "Orthophoto or satellite image; the model says how many bands it expects (usually red, green, "
                 "blue).")
        self.add(QgsProcessingParameterBand(self.OPTICAL_BANDS,
                                            "Optical bands, in the model's order (empty = 1, 2, 3...)", None,
                                            self.OPTICAL, optional=True, allowMultiple=True),
                 "Band numbers of the optical layer in the order the model expects them, e.g. 1,2,3 for R,G,B.")
        self.add(QgsProcessingParameterRasterLayer(self.ELEVATION, "Elevation: DSM or nDSM (metres)", optional=True),
                 "Digital surface model (heights above sea level) or normalised DSM (heights above ground), "
                 "in metres.")
        self.add(QgsProcessingParameterBand(self.ELEVATION_BAND, "Elevation band (empty = band 1)", None,
                                            self.ELEVATION, optional=True),
                 "Band of the elevation layer holding the heights.")
        self.add(QgsProcessingParameterEnum(self.ELEVATION_TYPE, "Elevation layer type", labels(ELEVATION_TYPES),
                                            defaultValue=0),
                 "Whether the elevation layer is a DSM or an nDSM. With a DTM below, a DSM is turned into an "
                 "nDSM (DSM - DTM) for models that expect one.")
        self.add(QgsProcessingParameterRasterLayer(self.DTM, "Terrain model: DTM (metres)", optional=True),
                 "Digital terrain model (bare-earth heights), used only to derive an nDSM from a DSM.")
        self.add(QgsProcessingParameterRasterLayer(self.SAR, "SAR image (intensity, dB or linear)", optional=True),
                 "Radar backscatter image; the model's package says which polarisations and units it expects.")
        self.add(QgsProcessingParameterBand(self.SAR_BANDS, "SAR bands, in the model's order (empty = 1, 2...)",
                                            None, self.SAR, optional=True, allowMultiple=True),
                 "Band numbers of the SAR layer, in the order the model expects (e.g. VV, VH).")
        self.add(QgsProcessingParameterRasterLayer(self.NIR, "Near-infrared image", optional=True),
                 "A near-infrared band, when it is a separate layer from the optical image.")
        self.add(QgsProcessingParameterBand(self.NIR_BAND, "NIR band (empty = band 1)", None, self.NIR,
                                            optional=True),
                 "Band of the NIR layer holding near-infrared reflectance.")

    def add_model_parameters(self, list_label: str, file_label: str, list_help: str, file_help: str) -> None:
        self._bundled = self._bundled_packages()
        model_labels = [self._package_label(meta) for _, meta in self._bundled] or [NO_BUNDLED_MODEL]
        self.add(QgsProcessingParameterEnum(self.MODEL, list_label, model_labels, defaultValue=0), list_help)
        self.add(QgsProcessingParameterFile(self.MODEL_FILE, file_label, extension="onnx", optional=True),
                 file_help)

    @staticmethod
    def _bundled_packages() -> List[Tuple[Path, Any]]:
        """Bundled model packages as (onnx path, metadata); empty when the engine can't be imported."""
        try:
            from ..engine import list_packages
        except ImportError:
            return []  # processAlgorithm reports the import problem with a full message
        if not BUNDLED_MODELS_DIR.is_dir():
            return []
        return sorted(list_packages(BUNDLED_MODELS_DIR), key=lambda found: found[1].name != DEFAULT_BUNDLED_MODEL)

    @staticmethod
    def _package_label(metadata: Any) -> str:
        inputs = " + ".join(spec.name + ("" if spec.required else "?") for spec in metadata.modalities)
        return f"{metadata.name} {metadata.version} ({inputs})"

    def checkParameterValues(self, parameters: Dict[str, Any],  # noqa: N802 - QGIS API name
                             context: QgsProcessingContext) -> Tuple[bool, str]:
        if not any(is_set(parameters, name) for name in self.INPUT_LAYER_PARAMETERS):
            return False, NO_LAYER_MESSAGE
        return super().checkParameterValues(parameters, context)

    # -- reading them ---------------------------------------------------------------------------
    def model_path(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> str:
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

    def load_model(self, engine: Any, parameters: Dict[str, Any], context: QgsProcessingContext) -> Any:
        try:
            package, failure = engine.load_package(self.model_path(parameters, context)), None
        except engine.PackageError as exc:
            package, failure = None, str(exc)
        if package is None:  # raised outside the except block: nothing of the failed load stays alive
            raise QgsProcessingException(failure)
        return package

    def layer_inputs(self, engine: Any, parameters: Dict[str, Any], context: QgsProcessingContext) -> Dict[str, Any]:
        """The given layers by engine role, as ``engine.LayerInput`` (file, bands, elevation type)."""
        elevation_type = key_at(ELEVATION_TYPES, self.parameterAsEnum(parameters, self.ELEVATION_TYPE, context))
        layers: Dict[str, Any] = {}
        for role, layer_parameter, band_parameter in self.MODALITY_PARAMETERS:
            if not is_set(parameters, layer_parameter):
                continue
            layer = self.parameterAsRasterLayer(parameters, layer_parameter, context)
            source = gdal_raster_path(layer, f"{role} input '{parameters.get(layer_parameter)}'")
            bands = None
            if band_parameter is not None:
                bands = tuple(b for b in self.parameterAsInts(parameters, band_parameter, context) if b > 0) or None
            if role == "elevation":
                layers[role] = engine.LayerInput(source, bands=bands, elevation_type=elevation_type)
            else:
                layers[role] = engine.LayerInput(source, bands=bands)
        if not any(role != "dtm" for role in layers):
            raise QgsProcessingException(NO_LAYER_MESSAGE)
        return layers

    # -- feedback ---------------------------------------------------------------------------------
    @staticmethod
    def engine_log(feedback: QgsProcessingFeedback, text: str) -> None:
        """Engine log lines; its warnings (prefixed 'Warning: ') are shown as warnings."""
        if text.startswith(WARNING_PREFIX):
            log_warning(feedback, text)
        else:
            feedback.pushInfo(text)

    @staticmethod
    def report_progress(feedback: QgsProcessingFeedback, fraction: float, message: Optional[str]) -> None:
        feedback.setProgress(100.0 * min(max(fraction, 0.0), 1.0))
        if message:
            feedback.setProgressText(message)
