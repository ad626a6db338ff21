"""``modalseg:rasterize_point_cloud``: classified LAS/LAZ clouds to DSM, DTM, nDSM, optical and labels.

Thin adapter over ``engine.point_cloud.rasterize_point_cloud``: clouds (files, folders or a point
cloud layer), the grid (a reference raster, else pixel size and CRS), the class mapping table and
the package whose classes the labels take are turned into engine arguments; the label raster is
styled with the package's classes when it is loaded.
"""
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterCrs,
    QgsProcessingParameterFile,
    QgsProcessingParameterMatrix,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterPointCloudLayer,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .base import ModalSegAlgorithm, gdal_raster_path, is_set
from .compat import NUMBER_DOUBLE, WKT_PREFERRED_GDAL
from .dependencies import missing_packages, missing_packages_message
from .model_inputs import BUNDLED_MODELS_DIR, DEFAULT_BUNDLED_MODEL, LayersAndModelAlgorithm
from .styling import apply_classified_style, style_when_loaded

# Output parameter -> engine output name, label, help.
OUTPUTS: Tuple[Tuple[str, str, str, str], ...] = (
    ("LABELS", "labels", "Labels (package classes)",
     "Class of the highest point of each cell, mapped onto the package's classes; unlabelled where ignored."),
    ("DSM", "dsm", "DSM (highest return)", "Surface heights: the highest point of each cell."),
    ("DTM", "dtm", "DTM (ground and water, gaps interpolated)",
     "Terrain heights: the lowest ground or water point of each cell, interpolated under buildings and trees."),
    ("NDSM", "ndsm", "nDSM (DSM - DTM, at least 0)", "Heights above ground."),
    ("OPTICAL", "optical", "Optical from point colours (RGB)",
     "Mean point colour of each cell (8-bit); not written when the clouds have no colours or only zeros."),
    ("NIR", "nir", "Near-infrared from point colours",
     "Mean NIR value of each cell (8-bit); not written when the clouds have no NIR channel or only zeros."),
)


def default_package() -> Path:
    return BUNDLED_MODELS_DIR / DEFAULT_BUNDLED_MODEL / f"{DEFAULT_BUNDLED_MODEL}.onnx"


class RasterizePointCloudAlgorithm(ModalSegAlgorithm):
    """Elevation rasters and training labels from classified airborne LiDAR."""

    ALGORITHM_ID = "rasterize_point_cloud"
    DISPLAY_NAME = "Rasterize a classified point cloud (labels, DSM, DTM, nDSM)"
    GROUP = "Training"
    GROUP_ID = "training"
    TAGS = ("lidar", "las", "laz", "point cloud", "rasterize", "dsm", "dtm", "ndsm", "labels", "training data",
            "classification", "lidar hd", "asprs")

    POINT_CLOUDS = "POINT_CLOUDS"
    POINT_CLOUD_LAYER = "POINT_CLOUD_LAYER"
    REFERENCE = "REFERENCE"
    PIXEL_SIZE = "PIXEL_SIZE"
    TARGET_CRS = "TARGET_CRS"
    SOURCE_CRS = "SOURCE_CRS"
    NODATA_DISTANCE = "NODATA_DISTANCE"
    CLASS_MAP = "CLASS_MAP"
    MODEL_FILE = "MODEL_FILE"

    def shortDescription(self) -> str:  # noqa: N802 - QGIS API name
        return "Turns classified LAS/LAZ point clouds into aligned DSM, DTM, nDSM, colour and label rasters."

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API name
        return (
            "<p>Makes training data where you have classified airborne LiDAR (IGN LiDAR HD, AHN, USGS 3DEP...): "
            "elevation layers for the elevation input of the models, and a label raster for "
            "<i>Fine-tune a model on your labels</i>, so no polygon needs drawing.</p>"
            "<p><b>Point clouds</b>: LAS or LAZ files, folders of tiles (every .las/.laz inside), or a point "
            "cloud layer. Points are read in chunks, so large clouds and many tiles run in bounded memory.</p>"
            "<p><b>Grid</b>: with a <i>reference raster</i> (typically your orthophoto) the outputs take its exact "
            "grid (CRS, extent, pixel size); otherwise the clouds' extent at the <i>pixel size</i> (metres) in "
            "the <i>output CRS</i> (default: the clouds' own). The clouds' CRS comes from their header (WKT or "
            "GeoTIFF keys) and they are reprojected when it differs; a cloud without one needs the <i>CRS of "
            "the point clouds</i>. Heights are written in the output CRS's unit (feet are converted); the log "
            "states the units.</p>"
            "<p><b>Per cell</b>: DSM = highest point; DTM = lowest ground (2) or water (9) point, gaps "
            "interpolated; nDSM = max(DSM - DTM, 0); colours = mean point colour; label = class of the "
            "highest point. Cells farther than the <i>nodata distance</i> from every point are nodata; empty "
            "cells nearer take the nearest cell's values.</p>"
            "<p><b>Class mapping</b>: one row per LAS class code: a class of the package (value or name, "
            "e.g. <i>building</i> or <i>ground</i>), <i>ignore</i> (used for heights, left unlabelled) or "
            "<i>exclude</i> (noise: used for nothing). The defaults cover ASPRS LAS 1.4 and IGN LiDAR HD "
            "codes; codes in no row are left unlabelled and listed in the log.</p>"
            "<p>Needs the Python packages <i>laspy</i> and <i>lazrs</i> (Install dependencies).</p>")

    def initAlgorithm(self, config: Optional[Dict[str, Any]] = None) -> None:  # noqa: N802 - QGIS API name
        from ..engine.point_cloud.classes import DEFAULT_CLASS_MAPPING

        add = self.add
        add(QgsProcessingParameterMultipleLayers(self.POINT_CLOUDS, "Point clouds (LAS/LAZ files or folders of tiles)",
                                                 QgsProcessing.TypeFile, optional=True),
            "One or more .las / .laz files; a folder stands for every .las / .laz file inside it.")
        add(QgsProcessingParameterPointCloudLayer(self.POINT_CLOUD_LAYER, "Point cloud layer", optional=True),
            "A LAS/LAZ point cloud layer of the project (read from its file), instead of or besides the files.")
        add(QgsProcessingParameterRasterLayer(self.REFERENCE, "Reference raster (outputs take its exact grid)",
                                              optional=True),
            "Typically the orthophoto you will segment: the outputs get its CRS, extent and pixel size.")
        add(QgsProcessingParameterNumber(self.PIXEL_SIZE, "Pixel size (metres; without a reference raster)",
                                         NUMBER_DOUBLE, defaultValue=0.5, minValue=0.01),
            "Side of an output pixel in metres, converted to the output CRS's unit.")
        add(QgsProcessingParameterCrs(self.TARGET_CRS, "Output CRS (without a reference raster)", optional=True),
            "Default: the first point cloud's CRS.")
        add(QgsProcessingParameterCrs(self.SOURCE_CRS, "CRS of the point clouds (replaces their header's)",
                                      optional=True),
            "Needed when a cloud's header has no CRS; when given, it replaces the header's.", advanced=True)
        add(QgsProcessingParameterNumber(self.NODATA_DISTANCE, "Nodata distance (pixels)", NUMBER_DOUBLE,
                                         defaultValue=2.0, minValue=0.0, maxValue=100.0),
            "Cells farther than this from every point are nodata; nearer empty cells take the nearest values.",
            advanced=True)
        add(QgsProcessingParameterMatrix(
            self.CLASS_MAP, "Class mapping (LAS code -> package class, ignore or exclude)", hasFixedNumberRows=False,
            headers=["LAS code", "class"],
            defaultValue=[item for code, target, _ in DEFAULT_CLASS_MAPPING for item in (code, target)]),
            "Target per LAS class code: a package class (value or name), 'ignore' (no label) or 'exclude' (noise).")
        add(QgsProcessingParameterFile(self.MODEL_FILE, "Model package whose classes the labels take (.onnx)",
                                       extension="onnx", optional=True),
            f"Default: the bundled {DEFAULT_BUNDLED_MODEL}. Label values, names and colours come from it.")
        for name, _, label, help_text in OUTPUTS:
            add(QgsProcessingParameterRasterDestination(name, label, optional=True, createByDefault=True), help_text)

    def checkParameterValues(self, parameters: Dict[str, Any],  # noqa: N802 - QGIS API name
                             context: QgsProcessingContext) -> Tuple[bool, str]:
        if not (is_set(parameters, self.POINT_CLOUDS) or is_set(parameters, self.POINT_CLOUD_LAYER)):
            return False, "Give at least one point cloud (LAS/LAZ files, a folder of tiles or a point cloud layer)."
        if not any(is_set(parameters, name) for name, *_ in OUTPUTS):
            return False, "Choose at least one output."
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: Optional[QgsProcessingFeedback]) -> Dict[str, Any]:
        feedback = feedback or QgsProcessingFeedback()
        missing = missing_packages(["numpy", "scipy", "laspy", "lazrs"])
        if missing:
            raise QgsProcessingException(missing_packages_message(missing, "reading LAS/LAZ point clouds"))
        from .. import engine
        from ..engine import point_cloud

        destinations = {kind: self.parameterAsOutputLayer(parameters, name, context)
                        for name, kind, _, _ in OUTPUTS if is_set(parameters, name)}
        failure = report = package = None
        try:
            package = engine.package.read_sidecar_metadata(self.parameterAsFile(parameters, self.MODEL_FILE, context)
                                                           or default_package())
            options = point_cloud.RasterizeOptions(
                reference=(gdal_raster_path(self.parameterAsRasterLayer(parameters, self.REFERENCE, context),
                                            "reference raster") if is_set(parameters, self.REFERENCE) else None),
                pixel_size_m=self.parameterAsDouble(parameters, self.PIXEL_SIZE, context),
                target_crs_wkt=self._crs_wkt(parameters, self.TARGET_CRS, context),
                source_crs_wkt=self._crs_wkt(parameters, self.SOURCE_CRS, context),
                nodata_distance=self.parameterAsDouble(parameters, self.NODATA_DISTANCE, context),
                class_rows=point_cloud.parse_rows(self.parameterAsMatrix(parameters, self.CLASS_MAP, context)))
            feedback.pushInfo(f"Labels take the classes of {package.name} {package.version}: "
                              + ", ".join(f"{c.value} {c.name}" for c in package.classes))
            report = point_cloud.rasterize_point_cloud(
                self._clouds(parameters, context), point_cloud.RasterOutputs(**destinations), package.classes,
                options, log=lambda text: LayersAndModelAlgorithm.engine_log(feedback, text),
                progress=lambda fraction, text: LayersAndModelAlgorithm.report_progress(feedback, fraction, text),
                is_cancelled=feedback.isCanceled)
        except (engine.EngineError, engine.PackageError, engine.Cancelled) as exc:
            failure = str(exc)
        if failure is not None:  # raised outside the except block: no GDAL objects kept alive in a traceback
            raise QgsProcessingException(failure[0].upper() + failure[1:] + ("" if failure.endswith(".") else "."))
        if "labels" in report.outputs:
            classes = [(c.value, c.name, c.color) for c in package.classes]
            style_when_loaded(context, report.outputs["labels"], lambda layer: apply_classified_style(layer, classes))
        return {name: report.outputs.get(kind) for name, kind, _, _ in OUTPUTS}

    def _crs_wkt(self, parameters: Dict[str, Any], name: str, context: QgsProcessingContext) -> Optional[str]:
        if not is_set(parameters, name):
            return None
        crs = self.parameterAsCrs(parameters, name, context)
        return crs.toWkt(WKT_PREFERRED_GDAL) if crs.isValid() else None

    def _clouds(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> List[str]:
        clouds = list(self.parameterAsFileList(parameters, self.POINT_CLOUDS, context)) \
            if is_set(parameters, self.POINT_CLOUDS) else []
        if is_set(parameters, self.POINT_CLOUD_LAYER):
            layer = self.parameterAsPointCloudLayer(parameters, self.POINT_CLOUD_LAYER, context)
            if layer is None or not layer.isValid():
                raise QgsProcessingException("The point cloud layer could not be opened.")
            source = layer.source().split("|")[0]
            if Path(source).suffix.lower() not in (".las", ".laz"):
                raise QgsProcessingException(f"The point cloud layer '{layer.name()}' is not read from a LAS/LAZ "
                                             f"file ({source}); export it as LAZ first.")
            clouds.append(source)
        return clouds
