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

from ..engine.errors import WARNING_PREFIX
from ..engine.vocabulary import ELEVATION_TYPES, OPTICAL_TYPES, SAR_SCALES, key_at, labels
from .base import ModalSegAlgorithm, gdal_raster_path, is_set, log_warning
from .paths import BUNDLED_MODELS_DIR, DEFAULT_BUNDLED_MODEL

NO_BUNDLED_MODEL = "(no bundled model found: choose a model file below)"
# Item 0 of the model list, hence the default (and what saved models and batch histories hold).
AUTOMATIC_MODEL = (f"Automatic: the bundled model that uses the most of the given layers "
                   f"(ties: {DEFAULT_BUNDLED_MODEL})")
NO_LAYER_MESSAGE = ("Give at least one input layer (optical, elevation, SAR or NIR); "
                    "the model decides which of them it uses.")


class LayersAndModelAlgorithm(ModalSegAlgorithm):
    """Base of algorithms that bind layers to a model package's modalities."""

    OPTICAL = "OPTICAL"
    OPTICAL_BANDS = "OPTICAL_BANDS"
    OPTICAL_TYPE = "OPTICAL_TYPE"
    ELEVATION = "ELEVATION"
    ELEVATION_BAND = "ELEVATION_BAND"
    ELEVATION_TYPE = "ELEVATION_TYPE"
    DTM = "DTM"
    SAR = "SAR"
    SAR_BANDS = "SAR_BANDS"
    SAR_SCALE = "SAR_SCALE"  # dB or linear power; a parameter of the algorithms that define it (segment)
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
                 "Band numbers of the optical layer in the order the model expects them, e.g. 1,2,3 for R,G,B "
                 "(4,3,2 for a Sentinel-2 stack B1...B12). For a false-colour infrared image: its near-infrared, red "
                 "and green bands, in that order (empty = 1, 2, 3).")
        self.add(QgsProcessingParameterEnum(self.OPTICAL_TYPE, "Optical image type", labels(OPTICAL_TYPES),
                                            defaultValue=0),
                 "True colour, or a false-colour infrared image (IRC: near-infrared, red, green, as IGN BD ORTHO IRC "
                 "or ISPRS Vaihingen). ModalSeg cannot tell them apart from the values: declare an IRC image here, "
                 "otherwise its near-infrared is read as red (vegetation comes out as roofs). Declared, its red and "
                 "green feed the model's red and green, blue is estimated as a copy of green (the log warns; "
                 "accuracy sits between a true-colour image and an undeclared IRC one), and the near-infrared feeds "
                 "the model's NIR input when it has one.")
        self.add(QgsProcessingParameterRasterLayer(self.ELEVATION, "Elevation: DSM or nDSM (metres)", optional=True),
                 "Digital surface model (heights above sea level) or normalised DSM (heights above ground), "
                 "in metres.")
        self.add(QgsProcessingParameterBand(self.ELEVATION_BAND, "Elevation band (empty = band 1)", None,
                                            self.ELEVATION, optional=True),
                 "Band of the elevation layer holding the heights.")
        self.add(QgsProcessingParameterEnum(self.ELEVATION_TYPE, "Elevation layer type", labels(ELEVATION_TYPES),
                                            defaultValue=0),
                 "Whether the elevation layer is a DSM or an nDSM. With a DTM below, a DSM is turned into an "
                 "nDSM (DSM - DTM) for models that expect one. Auto judges from the heights: a layer whose "
                 "lowest heights sit far above 0 m, or with heights below 0 m, is a DSM. It cannot tell an nDSM "
                 "with no ground in it (closed forest: every height well above 0 m, taken as a DSM) nor a DSM "
                 "of land within about half a metre of sea level (taken as an nDSM); choose the type there. "
                 "The log says what Auto decided and why.")
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
        model_labels = [AUTOMATIC_MODEL] + [self._package_label(meta) for meta in self.bundled_metadata] \
            if self._bundled else [NO_BUNDLED_MODEL]
        self.add(QgsProcessingParameterEnum(self.MODEL, list_label, model_labels, defaultValue=0), list_help)
        self.add(QgsProcessingParameterFile(self.MODEL_FILE, file_label, extension="onnx", optional=True),
                 file_help)

    @staticmethod
    def _bundled_packages() -> List[Tuple[Path, Any]]:
        """Bundled model packages as (onnx path, metadata), the default first; empty when the
        engine can't be imported."""
        try:
            from ..engine import list_packages
        except ImportError:
            return []  # processAlgorithm reports the import problem with a full message
        if not BUNDLED_MODELS_DIR.is_dir():
            return []
        return list_packages(BUNDLED_MODELS_DIR, first=DEFAULT_BUNDLED_MODEL)

    @staticmethod
    def _package_label(metadata: Any) -> str:
        """Name, version, inputs and measured accuracy per input subset (from the package metadata)."""
        from ..engine import describe_package  # importable: the list above came from the engine

        return describe_package(metadata)

    @property
    def bundled_metadata(self) -> List[Any]:
        return [meta for _, meta in self._bundled]

    def checkParameterValues(self, parameters: Dict[str, Any],  # noqa: N802 - QGIS API name
                             context: QgsProcessingContext) -> Tuple[bool, str]:
        if not any(is_set(parameters, name) for name in self.INPUT_LAYER_PARAMETERS):
            return False, NO_LAYER_MESSAGE
        unreadable = self._unreadable_layer_file(parameters)
        if unreadable:
            return False, unreadable
        return super().checkParameterValues(parameters, context)

    def _unreadable_layer_file(self, parameters: Dict[str, Any]) -> Optional[str]:
        """Why a layer given as an existing file cannot be opened (QGIS itself would only say 'not found')."""
        try:
            from ..engine import EngineError, open_raster
        except ImportError:
            return None  # processAlgorithm reports the import problem
        for _, layer_parameter, _ in self.MODALITY_PARAMETERS:
            value = parameters.get(layer_parameter)
            if isinstance(value, str) and os.path.isfile(value):
                try:
                    open_raster(value)
                except EngineError as exc:
                    message = str(exc)
                    return f"{layer_parameter}: {message[0].upper()}{message[1:]}."
        return None

    # -- reading them ---------------------------------------------------------------------------
    def model_path(self, engine: Any, parameters: Dict[str, Any], context: QgsProcessingContext,
                   feedback: Optional[QgsProcessingFeedback] = None) -> str:
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
        if not 0 <= index <= len(self._bundled):
            raise QgsProcessingException(f"Model number {index} does not exist; choose 0 (automatic) or a bundled "
                                         f"model (1 to {len(self._bundled)}).")
        if index > 0:
            return str(self._bundled[index - 1][0])
        try:  # the engine decides; this adapter only reports its choice
            choice, failure = engine.choose_package(self.bundled_metadata, self.layer_inputs(engine, parameters,
                                                                                            context),
                                                    DEFAULT_BUNDLED_MODEL), None
        except engine.EngineError as exc:
            choice, failure = None, str(exc)
        if choice is None:
            raise QgsProcessingException(failure)
        if feedback is not None:
            feedback.pushInfo(choice.reason[0].upper() + choice.reason[1:])
        return str(self._bundled[choice.index][0])

    def load_model(self, engine: Any, parameters: Dict[str, Any], context: QgsProcessingContext,
                   feedback: Optional[QgsProcessingFeedback] = None) -> Any:
        path = self.model_path(engine, parameters, context, feedback)
        try:
            package, failure = engine.load_package(path), None
        except engine.PackageError as exc:
            package, failure = None, str(exc)
        if package is None:  # raised outside the except block: nothing of the failed load stays alive
            raise QgsProcessingException(failure)
        return package

    def layer_inputs(self, engine: Any, parameters: Dict[str, Any], context: QgsProcessingContext) -> Dict[str, Any]:
        """The given layers by engine role, as ``engine.LayerInput`` (file, bands, optical type, elevation
        type, SAR values)."""
        elevation_type = key_at(ELEVATION_TYPES, self.parameterAsEnum(parameters, self.ELEVATION_TYPE, context))
        optical_type = key_at(OPTICAL_TYPES, self.parameterAsEnum(parameters, self.OPTICAL_TYPE, context))
        sar_scale = (key_at(SAR_SCALES, self.parameterAsEnum(parameters, self.SAR_SCALE, context))
                     if self.parameterDefinition(self.SAR_SCALE) is not None else "auto")
        layers: Dict[str, Any] = {}
        for role, layer_parameter, band_parameter in self.MODALITY_PARAMETERS:
            if not is_set(parameters, layer_parameter):
                continue
            layer = self.parameterAsRasterLayer(parameters, layer_parameter, context)
            source = gdal_raster_path(layer, f"{role} input '{parameters.get(layer_parameter)}'")
            bands = None
            if band_parameter is not None and is_set(parameters, band_parameter):
                bands = self._band_list(engine, parameters, band_parameter, context)
            if role == "elevation":
                layers[role] = engine.LayerInput(source, bands=bands, elevation_type=elevation_type)
            elif role == "sar":
                layers[role] = engine.LayerInput(source, bands=bands, sar_scale=sar_scale)
            elif role == "optical":
                layers[role] = engine.LayerInput(source, bands=bands, optical_type=optical_type)
            else:
                layers[role] = engine.LayerInput(source, bands=bands)
        if not any(role != "dtm" for role in layers):
            raise QgsProcessingException(NO_LAYER_MESSAGE)
        return layers

    def _band_list(self, engine: Any, parameters: Dict[str, Any], name: str,
                   context: QgsProcessingContext) -> Optional[Tuple[int, ...]]:
        """A band list in the forms users type (``4,3,2``, ``4;3;2``) or Processing passes (a list);
        QGIS's own conversion reads ``4,3,2`` as 0, so the raw value is parsed, and refused when
        it is not band numbers."""
        raw = parameters.get(name)
        if not isinstance(raw, (str, int, list, tuple)):  # e.g. a model child's value: QGIS evaluates it
            raw = list(self.parameterAsInts(parameters, name, context))
        try:
            return engine.parse_band_list(raw, name)
        except engine.EngineError as exc:
            failure = str(exc)
        raise QgsProcessingException(failure[0].upper() + failure[1:] + ".")

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
