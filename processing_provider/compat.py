"""Names that moved between QGIS 3.22 and the 3.36+ / QGIS 4 enums, resolved once.

QGIS 3.36 moved many enums into ``Qgis`` (e.g. ``Qgis.ProcessingParameterFlag.Advanced``) and
QGIS 4 drops the old spellings (``QgsProcessingParameterDefinition.FlagAdvanced``); the
plugin supports both, so every such name is looked up here and nowhere else.
"""
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsRasterBandStats,
    QgsWkbTypes,
)


def _first_available(*candidates):
    """Return the first ``(owner, dotted.name)`` that exists; the later ones are older APIs."""
    for owner, dotted in candidates:
        value = owner
        try:
            for part in dotted.split("."):
                value = getattr(value, part)
        except AttributeError:
            continue
        return value
    raise AttributeError("none of " + ", ".join(name for _, name in candidates) + " exist in this QGIS")


FLAG_ADVANCED = _first_available(
    (Qgis, "ProcessingParameterFlag.Advanced"),
    (QgsProcessingParameterDefinition, "FlagAdvanced"),
)
FLAG_OPTIONAL = _first_available(
    (Qgis, "ProcessingParameterFlag.Optional"),
    (QgsProcessingParameterDefinition, "FlagOptional"),
)
NUMBER_INTEGER = _first_available(
    (Qgis, "ProcessingNumberParameterType.Integer"),
    (QgsProcessingParameterNumber, "Integer"),
)
NUMBER_DOUBLE = _first_available(
    (Qgis, "ProcessingNumberParameterType.Double"),
    (QgsProcessingParameterNumber, "Double"),
)
WKT_PREFERRED_GDAL = _first_available(
    (Qgis, "CrsWktVariant.PreferredGdal"),
    (QgsCoordinateReferenceSystem, "WKT_PREFERRED_GDAL"),
)

NO_GEOMETRY = _first_available((Qgis, "WkbType.NoGeometry"), (QgsWkbTypes, "NoGeometry"))
SOURCE_POLYGON = _first_available((Qgis, "ProcessingSourceType.VectorPolygon"),
                                  (QgsProcessing, "TypeVectorPolygon"))
SOURCE_TABLE = _first_available((Qgis, "ProcessingSourceType.Vector"), (QgsProcessing, "TypeVector"))
FIELD_ANY = _first_available((Qgis, "ProcessingFieldParameterDataType.Any"),
                             (QgsProcessingParameterField, "Any"))
STATS_MIN = _first_available((Qgis, "RasterBandStatistic.Min"), (QgsRasterBandStats, "Min"))
STATS_MAX = _first_available((Qgis, "RasterBandStatistic.Max"), (QgsRasterBandStats, "Max"))
STATS_MEAN = _first_available((Qgis, "RasterBandStatistic.Mean"), (QgsRasterBandStats, "Mean"))
FAST_INSERT = _first_available((QgsFeatureSink, "Flag.FastInsert"), (QgsFeatureSink, "FastInsert"))


def mark_advanced(parameter: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    """Flag a parameter as advanced (shown folded in the dialog) and return it."""
    parameter.setFlags(parameter.flags() | FLAG_ADVANCED)
    return parameter


def set_help(parameter: QgsProcessingParameterDefinition, text: str) -> QgsProcessingParameterDefinition:
    """Attach a longer help text where the API exists (``setHelp`` is 3.16+; kept defensive)."""
    if hasattr(parameter, "setHelp"):
        parameter.setHelp(text)
    return parameter
