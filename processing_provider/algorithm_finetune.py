"""``modalseg:finetune``: fine-tune a model package on local labels; writes a new package.

Thin adapter over ``models.finetune.finetune``: layers are bound to modalities exactly as
``segment`` binds them (its own parameter helpers are reused), labels and the area of interest
are handed over as files OGR/GDAL can read, progress / log / cancel are wired to the feedback.
"""
from typing import Any, Dict, Optional, Tuple

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .base import gdal_raster_path, is_set, log_warning, ogr_vector_path
from .compat import FIELD_ANY, NUMBER_DOUBLE, NUMBER_INTEGER, SOURCE_POLYGON
from .dependencies import missing_packages, missing_packages_message
# The parameters' defaults and the freeze choices are the fine-tuning's own (one definition).
from ..models.finetune import FINETUNE_DEFAULTS as DEFAULTS
from ..models.finetune import FREEZE, FREEZE_CHOICES
from ..engine.vocabulary import DEVICES, FINETUNE_ALGORITHM, key_at, labels
from .model_inputs import LayersAndModelAlgorithm


def parse_class_map(text: str) -> Dict[str, str]:
    """``"forest=tree; meadow=low vegetation; pool=new:pool; 0=ignore"`` -> dict (label -> target)."""
    mapping: Dict[str, str] = {}
    for item in (text or "").replace("\n", ";").replace(",", ";").split(";"):
        if not item.strip():
            continue
        if "=" not in item:
            raise QgsProcessingException(f"Class mapping entry '{item.strip()}' must look like label=class "
                                         f"(e.g. forest=tree, pool=new:pool, 0=ignore).")
        label, target = item.split("=", 1)
        mapping[label.strip()] = target.strip()
    return mapping


class FinetuneAlgorithm(LayersAndModelAlgorithm):
    """Fine-tune a ModalSeg model on the analyst's labels (polygons or raster)."""

    ALGORITHM_ID, DISPLAY_NAME = FINETUNE_ALGORITHM  # engine warnings name it too (engine.trust)
    GROUP = "Training"
    GROUP_ID = "training"
    TAGS = ("fine-tune", "finetune", "training", "transfer learning", "labels", "deep learning", "segmentation",
            "model", "package")
    LABELS = "LABELS"
    CLASS_FIELD = "CLASS_FIELD"
    LABEL_RASTER = "LABEL_RASTER"
    LABEL_BAND = "LABEL_BAND"
    CLASS_MAP = "CLASS_MAP"
    AOI = "AOI"
    EPOCHS = "EPOCHS"
    TIME_BUDGET = "TIME_BUDGET"
    LEARNING_RATE = "LEARNING_RATE"
    BATCH_SIZE = "BATCH_SIZE"
    CHIP_SIZE = "CHIP_SIZE"
    VAL_FRACTION = "VAL_FRACTION"
    PATIENCE = "PATIENCE"
    KEEP_PRIOR = "KEEP_PRIOR"
    DEVICE = "DEVICE"
    FREEZE = "FREEZE"
    SEED = "SEED"
    NAME = "NAME"
    OUTPUT = "OUTPUT"
    MODEL_OUT = "MODEL_OUT"
    VAL_MIOU = "VAL_MIOU"
    START_VAL_MIOU = "START_VAL_MIOU"
    EPOCHS_RUN = "EPOCHS_RUN"

    def shortDescription(self) -> str:  # noqa: N802 - QGIS API name
        return "Adapts a ModalSeg model to your area with your own labels and writes a new model package."

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API name
        return (
            "<p>Trains a model package further on your labels so that it fits your area, sensor and "
            "season, and writes a new package that <i>Segment rasters</i> can use at once (Model file).</p>"
            "<p><b>Layers</b> are bound to the model's inputs exactly as in <i>Segment rasters</i>.</p>"
            "<p><b>Labels</b>: polygons with a class field (a class value such as 2 or a class name such "
            "as <i>building</i>; any CRS), or a label raster. Pixels outside the labels are ignored, so "
            "partial labels are the normal case. Labels that are no class of the model must be mapped in "
            "<i>Class mapping</i>: <code>label=class</code> entries separated by ';', where class is a "
            "class value or name of the model, <code>new:name</code> for a new class (the class head is "
            "re-initialised for it) or <code>ignore</code>. An optional <b>area of interest</b> limits "
            "the labels used.</p>"
            "<p><b>Training.</b> A strip at the far end of the labelled area holding about the "
            "<i>validation fraction</i> of the labelled pixels is kept apart for validation (spatially "
            "separate from the training chips); each epoch logs its loss and validation mIoU. Training "
            "stops after the epochs, the time budget, or when the validation mIoU has not improved for "
            "<i>patience</i> epochs; the best epoch is kept. Cancelling writes the best model so far "
            "when at least one epoch has finished. Freezing the encoders helps with few labels. Where no "
            "label is, the model is held to its starting decisions (<i>Keep what the model knew</i>), so "
            "a few polygons do not make it forget the rest of the area. Layers finer or coarser than the "
            "model's pixel-size range are resampled into it, as <i>Segment rasters</i> will run the "
            "tuned model.</p>"
            "<p><b>Output</b>: a model package folder (.onnx, .json, .safetensors); its metadata records "
            "the base model, the layers, the classes and the validation scores.</p>"
            "<p>Requires the Python packages <i>torch</i> and <i>onnxruntime</i> (and <i>onnx</i>).</p>")

    def initAlgorithm(self, config: Optional[Dict[str, Any]] = None) -> None:  # noqa: N802 - QGIS API name
        add = self.add
        self.add_modality_parameters()
        add(QgsProcessingParameterFeatureSource(self.LABELS, "Labels (polygons with a class field)",
                                                [SOURCE_POLYGON], optional=True),
            "Training polygons; pixels whose centre lies inside one get its class. Give these or a label raster.")
        add(QgsProcessingParameterField(self.CLASS_FIELD, "Class field (class value or name)", None, self.LABELS,
                                        FIELD_ANY, optional=True),
            "Field holding each polygon's class: a value (e.g. 2) or a name (e.g. building).")
        add(QgsProcessingParameterRasterLayer(self.LABEL_RASTER, "Labels (raster)", optional=True),
            "A raster of class values; its nodata is ignored.")
        add(QgsProcessingParameterBand(self.LABEL_BAND, "Label raster band (empty = band 1)", None,
                                       self.LABEL_RASTER, optional=True),
            "Band of the label raster holding the classes.", advanced=True)
        add(QgsProcessingParameterString(self.CLASS_MAP, "Class mapping (label=class; ...)", optional=True,
                                         multiLine=False),
            "Map label values or names to the model's classes, e.g. 'forest=tree; pool=new:pool; 0=ignore'. "
            "Labels already equal to a class value or name need no entry.")
        add(QgsProcessingParameterFeatureSource(self.AOI, "Area of interest (polygons, optional)",
                                                [SOURCE_POLYGON], optional=True),
            "Only labels inside these polygons are used.", advanced=True)

        self.add_model_parameters(
            "Start from model (bundled package)", "Start from model file (.onnx; overrides the list)",
            "The package whose weights fine-tuning starts from.",
            "Any ModalSeg package with torch weights (.safetensors) beside its .onnx graph.")

        add(QgsProcessingParameterNumber(self.EPOCHS, "Epochs (maximum)", NUMBER_INTEGER,
                                         defaultValue=DEFAULTS.epochs, minValue=1, maxValue=1000),
            "Passes over the training area; early stopping may end sooner.")
        add(QgsProcessingParameterNumber(self.TIME_BUDGET, "Time budget (minutes; 0 = none)", NUMBER_DOUBLE,
                                         defaultValue=DEFAULTS.minutes, minValue=0.0),
            "Stop after this much training time and keep the best epoch so far.")
        add(QgsProcessingParameterNumber(self.LEARNING_RATE, "Learning rate", NUMBER_DOUBLE,
                                         defaultValue=DEFAULTS.learning_rate, minValue=1e-6, maxValue=1.0),
            "Step size of the optimiser (AdamW, short warm-up, then decay).", advanced=True)
        add(QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size (chips per step)", NUMBER_INTEGER,
                                         defaultValue=DEFAULTS.batch_size, minValue=1, maxValue=256),
            "Lower it if memory runs out.", advanced=True)
        add(QgsProcessingParameterNumber(self.CHIP_SIZE, "Chip size (pixels)", NUMBER_INTEGER,
                                         defaultValue=DEFAULTS.chip, minValue=32, maxValue=1024),
            "Side of the square training chips (rounded to the model's size multiple).", advanced=True)
        add(QgsProcessingParameterNumber(self.VAL_FRACTION, "Validation fraction (0-0.5)", NUMBER_DOUBLE,
                                         defaultValue=DEFAULTS.val_fraction, minValue=0.0, maxValue=0.5),
            "Share of the labelled pixels held out in a separate strip to choose the best epoch; 0 = none.",
            advanced=True)
        add(QgsProcessingParameterNumber(self.PATIENCE, "Early stopping patience (epochs; 0 = off)", NUMBER_INTEGER,
                                         defaultValue=DEFAULTS.patience, minValue=0),
            "Stop when the validation mIoU has not improved for this many epochs.", advanced=True)
        add(QgsProcessingParameterNumber(self.KEEP_PRIOR, "Keep what the model knew (weight; 0 = off)", NUMBER_DOUBLE,
                                         defaultValue=DEFAULTS.keep_prior, minValue=0.0, maxValue=100.0),
            "Where no label is, the tuned model is held to the starting model's decisions with this weight "
            "(distillation), so a few polygons teach it the area without making it forget the rest. Off when "
            "new classes are added.", advanced=True)
        add(QgsProcessingParameterEnum(self.DEVICE, "Device", labels(DEVICES), defaultValue=0),
            "Where training runs; a CUDA GPU is much faster.", advanced=True)
        add(QgsProcessingParameterEnum(self.FREEZE, "Freeze", labels(FREEZE),
                                       defaultValue=FREEZE_CHOICES.index(DEFAULTS.freeze)),
            "Layers kept as they are; freezing helps when labels are few.", advanced=True)
        add(QgsProcessingParameterNumber(self.SEED, "Random seed", NUMBER_INTEGER, defaultValue=DEFAULTS.seed,
                                         minValue=0),
            "Same seed, same data and same machine give the same model.", advanced=True)
        add(QgsProcessingParameterString(self.NAME, "Name of the new model (empty = <base>-finetuned)",
                                         optional=True),
            "Recorded in the package metadata and used as its file name.", advanced=True)
        add(QgsProcessingParameterFolderDestination(self.OUTPUT, "Fine-tuned model package (folder)"),
            "Folder that receives the new package (.onnx, .json, .safetensors); replaced if it exists.")
        self.addOutput(QgsProcessingOutputFile(self.MODEL_OUT, "Fine-tuned model file (.onnx)"))
        self.addOutput(QgsProcessingOutputNumber(self.VAL_MIOU, "Validation mIoU of the fine-tuned model"))
        self.addOutput(QgsProcessingOutputNumber(self.START_VAL_MIOU, "Validation mIoU of the starting model"))
        self.addOutput(QgsProcessingOutputNumber(self.EPOCHS_RUN, "Epochs trained"))

    def checkParameterValues(self, parameters: Dict[str, Any],  # noqa: N802 - QGIS API name
                             context: QgsProcessingContext) -> Tuple[bool, str]:
        polygons, raster = is_set(parameters, self.LABELS), is_set(parameters, self.LABEL_RASTER)
        if polygons == raster:
            return False, "Give the labels either as polygons with a class field or as a raster (one of the two)."
        if polygons and not is_set(parameters, self.CLASS_FIELD):
            return False, "Choose the class field of the label polygons."
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: Optional[QgsProcessingFeedback]) -> Dict[str, Any]:
        feedback = feedback or QgsProcessingFeedback()
        missing = missing_packages(["numpy", "scipy", "onnxruntime", "onnx", "torch", "safetensors"])
        if missing:
            raise QgsProcessingException(missing_packages_message(missing, "fine-tuning"))
        from .. import engine
        from ..models import finetune as ft

        package = self.load_model(engine, parameters, context)
        layers = self.layer_inputs(engine, parameters, context)
        labels = self.label_input(ft, parameters, context, feedback)
        options = ft.FinetuneOptions(
            epochs=self.parameterAsInt(parameters, self.EPOCHS, context),
            minutes=self.parameterAsDouble(parameters, self.TIME_BUDGET, context),
            learning_rate=self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            chip=self.parameterAsInt(parameters, self.CHIP_SIZE, context),
            val_fraction=self.parameterAsDouble(parameters, self.VAL_FRACTION, context),
            patience=self.parameterAsInt(parameters, self.PATIENCE, context),
            keep_prior=self.parameterAsDouble(parameters, self.KEEP_PRIOR, context),
            device=key_at(DEVICES, self.parameterAsEnum(parameters, self.DEVICE, context)),
            freeze=FREEZE[self.parameterAsEnum(parameters, self.FREEZE, context)][0],
            seed=self.parameterAsInt(parameters, self.SEED, context),
            name=self.parameterAsString(parameters, self.NAME, context).strip() or None)
        out_dir = self.parameterAsString(parameters, self.OUTPUT, context)
        feedback.pushInfo(f"Starting model: {package.metadata.name} {package.metadata.version} ({package.onnx_path})")
        result = failure = None
        try:
            sources, messages = engine.bind_modalities(package.metadata, layers)
            for message in messages:
                feedback.pushInfo(message)
            result = ft.finetune(
                package.onnx_path, sources, labels, out_dir, options,
                log=lambda text: self.engine_log(feedback, text),
                progress=lambda fraction, text: self.report_progress(feedback, fraction, text),
                is_cancelled=feedback.isCanceled,
                # a feedback that takes epoch reports (the fine-tune dialog's, for its live curve)
                on_epoch=getattr(feedback, "report_epoch", None))
        except engine.Cancelled as exc:
            failure = str(exc)
        except (engine.EngineError, engine.PackageError) as exc:
            failure = str(exc)
        if failure is not None:  # raised outside the except block: no GDAL / torch objects kept alive
            raise QgsProcessingException(failure)
        if result.stopped == "cancelled":
            log_warning(feedback, f"Cancelled: the package holds the best epoch so far ({result.best_epoch}).")
        feedback.pushInfo(f"Fine-tuned model: {result.onnx_path}")
        if result.best_val_miou is not None:
            start = "n/a" if result.start_val_miou is None else f"{result.start_val_miou:.3f}"
            feedback.pushInfo(f"Validation mIoU: {start} before, {result.best_val_miou:.3f} after "
                              f"(epoch {result.best_epoch} of {result.epochs}, stopped by {result.stopped}).")
        nan = float("nan")
        return {self.OUTPUT: out_dir, self.MODEL_OUT: str(result.onnx_path),
                self.VAL_MIOU: nan if result.best_val_miou is None else result.best_val_miou,
                self.START_VAL_MIOU: nan if result.start_val_miou is None else result.start_val_miou,
                self.EPOCHS_RUN: result.epochs}

    def label_input(self, ft: Any, parameters: Dict[str, Any], context: QgsProcessingContext,
                feedback: QgsProcessingFeedback) -> Any:
        mapping = parse_class_map(self.parameterAsString(parameters, self.CLASS_MAP, context))
        aoi = aoi_layer = None
        if is_set(parameters, self.AOI):
            aoi, aoi_layer = ogr_vector_path(self, parameters, self.AOI, context, feedback)
        if is_set(parameters, self.LABELS):
            path, layer = ogr_vector_path(self, parameters, self.LABELS, context, feedback)
            return ft.LabelInput(vector=path, layer=layer,
                                 class_field=self.parameterAsString(parameters, self.CLASS_FIELD, context),
                                 aoi=aoi, aoi_layer=aoi_layer, mapping=mapping)
        raster = gdal_raster_path(self.parameterAsRasterLayer(parameters, self.LABEL_RASTER, context), "label raster")
        return ft.LabelInput(raster=raster, band=self.parameterAsInt(parameters, self.LABEL_BAND, context) or 1,
                             aoi=aoi, aoi_layer=aoi_layer, mapping=mapping)
