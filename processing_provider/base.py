"""What every ModalSeg algorithm shares: identity boilerplate, parameter and feedback helpers,
and access to the files behind layers (the engine reads files through GDAL/OGR)."""
from typing import Any, Dict, List, Optional, Tuple

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsRasterLayer,
)
from qgis.PyQt.QtGui import QIcon

from ..engine.gdal_mode import gdal_exceptions
from .compat import mark_advanced, set_help
from .paths import ICON_PATH

HELP_URL = "https://github.com/modalseg/modalseg#readme"


def is_set(parameters: Dict[str, Any], name: str) -> bool:
    """Whether the user gave a value (empty strings and null QVariants count as not given)."""
    value = parameters.get(name)
    return value is not None and value != "" and not (hasattr(value, "isNull") and value.isNull())


def gdal_raster_path(layer: Optional[QgsRasterLayer], what: str) -> str:
    """The GDAL file behind a raster layer, or a message saying how to get one."""
    if layer is None or not layer.isValid():
        raise QgsProcessingException(f"The {what} could not be opened as a raster layer.")
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"The {what} '{layer.name()}' comes from the '{layer.providerType()}' data provider; ModalSeg reads "
            f"rasters through GDAL files. Save it as a GeoTIFF first (Raster > Conversion > Translate).")
    return layer.source()


def ogr_vector_path(algorithm: QgsProcessingAlgorithm, parameters: Dict[str, Any], name: str,
                    context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> Tuple[str, Optional[str]]:
    """(file, layer name) GDAL/OGR can open; memory layers, selections and filters are saved first."""
    path, layer_name = algorithm.parameterAsCompatibleSourceLayerPathAndLayerName(
        parameters, name, context, ["gpkg", "shp", "geojson", "fgb"], "gpkg", feedback)
    if not path:
        raise QgsProcessingException(f"The layer given as {name} could not be read.")
    return path.split("|")[0], layer_name or None


def log_warning(feedback: QgsProcessingFeedback, text: str) -> None:
    if hasattr(feedback, "pushWarning"):  # QGIS 3.28+
        feedback.pushWarning(text)
    else:
        feedback.reportError(text, False)


class ModalSegAlgorithm(QgsProcessingAlgorithm):
    """Identity from class attributes, the plugin icon and help page, and ``add`` for parameters."""

    ALGORITHM_ID = ""
    DISPLAY_NAME = ""
    GROUP = ""
    GROUP_ID = ""
    TAGS: Tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every algorithm's ``processAlgorithm`` runs with GDAL's exceptions on (ModalSeg's GDAL
        calls rely on them) and leaves the mode of QGIS and the other plugins as it found it."""
        super().__init_subclass__(**kwargs)
        if "processAlgorithm" in cls.__dict__:
            cls.processAlgorithm = gdal_exceptions()(cls.__dict__["processAlgorithm"])

    def name(self) -> str:
        return self.ALGORITHM_ID

    def displayName(self) -> str:  # noqa: N802 - QGIS API name
        return self.DISPLAY_NAME

    def group(self) -> str:
        return self.GROUP

    def groupId(self) -> str:  # noqa: N802 - QGIS API name
        return self.GROUP_ID

    def tags(self) -> List[str]:
        return list(self.TAGS)

    def icon(self) -> QIcon:
        return QIcon(str(ICON_PATH))

    def helpUrl(self) -> str:  # noqa: N802 - QGIS API name
        return HELP_URL

    def createInstance(self) -> "ModalSegAlgorithm":  # noqa: N802 - QGIS API name
        return type(self)()

    def add(self, parameter, help_text: str, advanced: bool = False) -> None:
        """Add a parameter with its help text, folded among the advanced ones when asked."""
        set_help(parameter, help_text)
        if advanced:
            mark_advanced(parameter)
        self.addParameter(parameter)
