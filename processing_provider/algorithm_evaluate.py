"""``modalseg:evaluate``: accuracy of a classified raster against reference labels.

Thin adapter: it hands file paths, class list, ignore value and erosion radius to
``engine.evaluation`` (which reads, rasterises and scores) and turns the result into a table,
a CSV file, an HTML report and numeric outputs.
"""
import shutil
import tempfile
from typing import Any, Dict, Optional, Tuple

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputHtml,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from .base import ModalSegAlgorithm, gdal_raster_path, is_set, log_warning, ogr_vector_path
from .compat import FAST_INSERT, FIELD_ANY, NO_GEOMETRY, NUMBER_INTEGER, SOURCE_POLYGON, SOURCE_TABLE
from .dependencies import missing_packages, missing_packages_message


def _variant_types() -> Dict[str, Any]:
    """Field types: QMetaType where QGIS takes it (3.38+, QGIS 4), QVariant before."""
    try:
        from qgis.PyQt.QtCore import QMetaType

        QgsField("probe", QMetaType.Type.Double)
        return {"int": QMetaType.Type.Int, "double": QMetaType.Type.Double, "string": QMetaType.Type.QString}
    except (TypeError, AttributeError):
        from qgis.PyQt.QtCore import QVariant

        return {"int": QVariant.Int, "double": QVariant.Double, "string": QVariant.String}


def table_fields() -> QgsFields:
    types = _variant_types()
    fields = QgsFields()
    for name, kind in (("value", "int"), ("class", "string"), ("iou", "double"), ("f1", "double"),
                       ("precision", "double"), ("recall", "double"), ("support_px", "int"),
                       ("predicted_px", "int")):
        fields.append(QgsField(name, types[kind]))
    return fields


class EvaluateAlgorithm(ModalSegAlgorithm):
    """Confusion matrix and per-class scores of a classification against reference labels."""

    ALGORITHM_ID = "evaluate"
    DISPLAY_NAME = "Evaluate a classification (accuracy assessment)"
    GROUP = "Accuracy"
    GROUP_ID = "accuracy"
    TAGS = ("accuracy", "assessment", "confusion matrix", "iou", "miou", "f1", "kappa", "validation", "evaluation",
            "isprs", "segmentation")

    INPUT = "INPUT"
    REFERENCE = "REFERENCE"
    REFERENCE_BAND = "REFERENCE_BAND"
    REFERENCE_POLYGONS = "REFERENCE_POLYGONS"
    CLASS_FIELD = "CLASS_FIELD"
    IGNORE_VALUE = "IGNORE_VALUE"
    EROSION = "EROSION"
    MODEL_FILE = "MODEL_FILE"
    TABLE = "TABLE"
    CSV = "CSV"
    HTML = "HTML"
    OA = "OA"
    MIOU = "MIOU"
    MF1 = "MF1"
    KAPPA = "KAPPA"
    REPORT = "REPORT"

    def shortDescription(self) -> str:  # noqa: N802 - QGIS API name
        return "Confusion matrix, per-class IoU/F1, OA, mIoU, kappa of a classified raster against reference labels."

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API name
        return (
            "<p>Compares a classified raster (e.g. the output of <i>Segment rasters</i>) with reference "
            "labels and reports the confusion matrix (rows = reference, columns = prediction), per-class "
            "IoU, F1, precision and recall, and overall accuracy (OA), mean IoU, mean F1 and Cohen's kappa.</p>"
            "<p><b>Reference.</b> A label raster (read on the classified raster's grid, nearest "
            "neighbour; its nodata is not scored), or polygons with a class field holding class values "
            "or class names (rasterised on the classified raster's grid; any CRS). Pixels without a "
            "reference label are not scored: partial labels are fine.</p>"
            "<p><b>Classes.</b> Names come from the model package when one is given, else from the "
            "classified raster's category names, else every value found is a class. A reference value "
            "that is no class is an error unless it is the <i>ignore value</i>. A labelled pixel the "
            "classification leaves empty (nodata) counts as an error in the <i>(unclassified)</i> column.</p>"
            "<p><b>Boundary erosion</b> (ISPRS convention): reference pixels within this many pixels of a "
            "boundary between two classes are not scored, so a one-pixel label misregistration does not "
            "dominate the result. Means skip classes absent from both reference and prediction.</p>"
            "<p><b>Outputs.</b> A table with one row per class plus a row of means, a CSV file with the "
            "table, the summary and the matrix, an HTML report with the confusion matrix as a picture, "
            "and OA, mIoU, mF1, kappa as numbers (for models and batch runs).</p>")

    def initAlgorithm(self, config: Optional[Dict[str, Any]] = None) -> None:  # noqa: N802 - QGIS API name
        add = self.add

        add(QgsProcessingParameterRasterLayer(self.INPUT, "Classified raster"),
            "One band of class values, e.g. the classified output of Segment rasters.")
        add(QgsProcessingParameterRasterLayer(self.REFERENCE, "Reference labels (raster)", optional=True),
            "A raster of class values; nodata (and the ignore value) is not scored. Give this or polygons.")
        add(QgsProcessingParameterBand(self.REFERENCE_BAND, "Reference band (empty = band 1)", None,
                                       self.REFERENCE, optional=True),
            "Band of the reference raster holding the class values.", advanced=True)
        add(QgsProcessingParameterFeatureSource(self.REFERENCE_POLYGONS, "Reference labels (polygons)",
                                                [SOURCE_POLYGON], optional=True),
            "Polygons with a class field; pixels whose centre is inside a polygon get its class.")
        add(QgsProcessingParameterField(self.CLASS_FIELD, "Class field of the polygons (value or name)", None,
                                        self.REFERENCE_POLYGONS, FIELD_ANY, optional=True),
            "Field holding each polygon's class value (e.g. 2) or class name (e.g. building).")
        add(QgsProcessingParameterNumber(self.IGNORE_VALUE, "Ignore value (reference pixels not scored)",
                                         NUMBER_INTEGER, defaultValue=None, optional=True, minValue=0,
                                         maxValue=65535),
            "Reference value meaning 'unlabelled' or 'do not care', e.g. 0.")
        add(QgsProcessingParameterNumber(self.EROSION, "Boundary erosion radius (pixels; 0 = off)",
                                         NUMBER_INTEGER, defaultValue=0, minValue=0, maxValue=50),
            "ISPRS convention: reference pixels this close to a class boundary are not scored (3 px is usual "
            "at 5-10 cm; 1 px at 0.5 m).")
        add(QgsProcessingParameterFile(self.MODEL_FILE, "Model package for class names (optional)",
                                       extension="onnx", optional=True),
            "The .onnx package the classification came from: its class names and colours are used.",
            advanced=True)
        add(QgsProcessingParameterFeatureSink(self.TABLE, "Accuracy table", SOURCE_TABLE),
            "One row per class (value, name, IoU, F1, precision, recall, pixels) and a row of means.")
        add(QgsProcessingParameterFileDestination(self.CSV, "Accuracy CSV", "CSV files (*.csv)", optional=True,
                                                  createByDefault=True),
            "The table, the summary (OA, mIoU, mF1, kappa) and the confusion matrix as CSV.")
        add(QgsProcessingParameterFileDestination(self.HTML, "Accuracy report (HTML)", "HTML files (*.html)",
                                                  optional=True, createByDefault=True),
            "A report with the summary, the per-class table and the confusion matrix as a picture.")
        for name, label in ((self.OA, "Overall accuracy"), (self.MIOU, "Mean IoU"), (self.MF1, "Mean F1"),
                            (self.KAPPA, "Cohen's kappa")):
            self.addOutput(QgsProcessingOutputNumber(name, label))
        # the same file as HTML, declared as an HTML output so the Results Viewer lists it
        self.addOutput(QgsProcessingOutputHtml(self.REPORT, "Accuracy report"))

    def checkParameterValues(self, parameters: Dict[str, Any],  # noqa: N802 - QGIS API name
                             context: QgsProcessingContext) -> Tuple[bool, str]:
        has_raster, has_polygons = is_set(parameters, self.REFERENCE), is_set(parameters, self.REFERENCE_POLYGONS)
        if has_raster == has_polygons:
            return False, "Give the reference labels either as a raster or as polygons (one of the two)."
        if has_polygons and not is_set(parameters, self.CLASS_FIELD):
            return False, "Choose the class field of the reference polygons."
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: Optional[QgsProcessingFeedback]) -> Dict[str, Any]:
        feedback = feedback or QgsProcessingFeedback()
        missing = missing_packages(["numpy", "scipy"])
        if missing:
            raise QgsProcessingException(missing_packages_message(missing, "accuracy assessment"))
        from ..engine import EngineError, PackageError, evaluation, evaluation_report
        from ..engine.package import read_sidecar_metadata

        classified = gdal_raster_path(self.parameterAsRasterLayer(parameters, self.INPUT, context),
                                      "classified raster")
        classes = []
        model_file = self.parameterAsFile(parameters, self.MODEL_FILE, context)
        failure = None
        try:
            if model_file:
                classes = evaluation.classes_from_package(read_sidecar_metadata(model_file))
                feedback.pushInfo(f"Classes from the model package {model_file}")
            else:
                classes = evaluation.raster_classes(classified)
                feedback.pushInfo("Classes from the classified raster's category names" if classes else
                                  "The classified raster names no classes: every value found is a class")
        except (EngineError, PackageError) as exc:
            failure = str(exc)
        if failure:
            raise QgsProcessingException(failure)
        ignore = (self.parameterAsInt(parameters, self.IGNORE_VALUE, context)
                  if is_set(parameters, self.IGNORE_VALUE) else None)
        options = dict(classes=classes, ignore_value=ignore,
                       erosion_radius=self.parameterAsInt(parameters, self.EROSION, context),
                       progress=lambda f, m: feedback.setProgress(100.0 * f), is_cancelled=feedback.isCanceled)
        work = tempfile.mkdtemp(prefix="modalseg-evaluate-")
        result = None
        try:
            if is_set(parameters, self.REFERENCE_POLYGONS):
                path, layer_name = ogr_vector_path(self, parameters, self.REFERENCE_POLYGONS, context, feedback)
                field = self.parameterAsString(parameters, self.CLASS_FIELD, context)
                feedback.pushInfo(f"Rasterising reference polygons ({field}) on the classified raster's grid")
                result = evaluation.evaluate_polygons(classified, path, field, work, layer=layer_name, **options)
            else:
                reference = gdal_raster_path(self.parameterAsRasterLayer(parameters, self.REFERENCE, context),
                                             "reference raster")
                band = self.parameterAsInt(parameters, self.REFERENCE_BAND, context) or 1
                result = evaluation.evaluate_classification(classified, reference, reference_band=band, **options)
        except EngineError as exc:
            failure = str(exc)
        except evaluation.Cancelled:
            failure = "Cancelled by the user"
        finally:
            _remove_tree(work)
        if failure:  # raised outside the except block: no GDAL objects kept alive in a traceback
            raise QgsProcessingException(failure)

        for message in result.messages:
            log_warning(feedback, message)
        s = result.summary
        feedback.pushInfo(f"{result.pixels['scored']} pixels scored ({result.pixels['ignored']} ignored, "
                          f"{result.pixels['eroded']} eroded): OA {_pct(s['oa'])}, mIoU {_pct(s['miou'])}, "
                          f"mF1 {_pct(s['mf1'])}, kappa {_fmt(s['kappa'])}")
        for row in result.rows():
            feedback.pushInfo(f"  {row['value']:>3} {row['name']:<24} IoU {_pct(row['iou'])}  F1 {_pct(row['f1'])}  "
                              f"{row['support']} px")
        results: Dict[str, Any] = {self.OA: s["oa"], self.MIOU: s["miou"], self.MF1: s["mf1"],
                                   self.KAPPA: s["kappa"]}
        sink, dest_id = self.parameterAsSink(parameters, self.TABLE, context, table_fields(), NO_GEOMETRY,
                                             QgsCoordinateReferenceSystem())
        if sink is not None:
            for row in result.rows() + [result.mean_row()]:
                feature = QgsFeature(table_fields())
                feature.setAttributes([row["value"], row["name"], row["iou"], row["f1"], row["precision"],
                                       row["recall"], row["support"], row["predicted"]])
                sink.addFeature(feature, FAST_INSERT)
            results[self.TABLE] = dest_id
        csv_path = self.parameterAsFileOutput(parameters, self.CSV, context) if is_set(parameters, self.CSV) else ""
        if csv_path:
            evaluation_report.write_csv(result, csv_path)
            results[self.CSV] = csv_path
        html_path = self.parameterAsFileOutput(parameters, self.HTML, context) if is_set(parameters, self.HTML) else ""
        if html_path:
            ref_name = parameters.get(self.REFERENCE_POLYGONS) or parameters.get(self.REFERENCE)
            evaluation_report.write_html(result, html_path, details=[
                ("classified raster", classified), ("reference", str(ref_name)),
                ("ignore value", "none" if ignore is None else str(ignore)),
                ("boundary erosion", f"{options['erosion_radius']} px")])
            results[self.HTML] = results[self.REPORT] = html_path
        return results


def _pct(x: Any) -> str:
    return "n/a" if x is None or x != x else f"{100.0 * x:.1f} %"


def _fmt(x: Any) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)  # a temporary folder: best effort
