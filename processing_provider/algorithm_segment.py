"""``modalseg:segment``: turn Processing parameters into one engine run, and style its outputs.

This module is a thin adapter: it reads parameters, hands layers, grid, outputs and options to
``engine.run_segmentation`` and maps engine errors to ``QgsProcessingException``. Binding layers
to modalities, alignment, tiling, inference and writing all happen in the engine.
"""
from typing import Any, Dict, Optional

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDistance,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from ..engine.errors import WARNING_PREFIX
from ..engine.vocabulary import (BLEND_WINDOWS, DEFAULT_GROUND_WINDOW_M, DEVICES, PRECISIONS, RUNTIMES, SAR_SCALES,
                                 key_at, labels)
from .base import is_set
from .compat import NUMBER_DOUBLE, NUMBER_INTEGER, WKT_PREFERRED_GDAL
from .dependencies import missing_packages, missing_packages_message
from .model_inputs import LayersAndModelAlgorithm
from .algorithm_install_dependencies import INSTALL_CUDA_BUILD
from .styling import input_layer_name, output_styles, style_when_loaded

GEOTIFF_SUFFIXES = (".tif", ".tiff")


class SegmentAlgorithm(LayersAndModelAlgorithm):
    """Segment co-registered (or not) rasters of several modalities with a model package."""

    ALGORITHM_ID = "segment"
    DISPLAY_NAME = "Segment rasters (multimodal)"
    GROUP = "Segmentation"
    GROUP_ID = "segmentation"
    TAGS = ("segmentation", "classification", "deep learning", "land cover", "dsm", "ndsm", "lidar", "sar", "nir",
            "multimodal", "robustness", "onnx")
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
    CLOUD_OPTIMIZED = "CLOUD_OPTIMIZED"
    SMOOTHING = "SMOOTHING"
    GROUND_WINDOW = "GROUND_WINDOW"
    PRECISION = "PRECISION"
    DASK_SCHEDULER = "DASK_SCHEDULER"
    OUTPUT = "OUTPUT"
    ROBUSTNESS = "ROBUSTNESS"
    PROBABILITIES = "PROBABILITIES"
    CONFIDENCE = "CONFIDENCE"
    DOMINANT = "DOMINANT"

    def shortDescription(self) -> str:  # noqa: N802 - QGIS API name
        return "Classifies rasters of several sensors with a segmentation network and maps each sensor's share."

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API name
        return (
            "<p>Classifies every pixel of an area from the raster layers you have for it - an optical "
            "image, a DSM or nDSM (optionally with a DTM), a SAR scene, a NIR band - with a multimodal "
            "segmentation network, and maps how much each input drove the decision.</p>"
            "<p><b>Inputs.</b> Give at least one layer. The model decides which inputs it uses and which "
            "it requires; the log says how each layer was bound (e.g. <i>optical &larr; ortho.tif bands "
            "1,2,3</i>). Leave a band selection empty to use the bands in the layer's order; from the "
            "command line a band list is written <i>4,3,2</i> or <i>4;3;2</i>, and anything else stops "
            "the run. A false-colour infrared image (near-infrared, red, green) must be declared with "
            "<i>Optical image type</i>, or its near-infrared is read as red: declared, its red and green feed "
            "the model's red and green and blue is a copy of green (a warning says so). "
            "A layer or band the model does not use is named in a warning, with the bundled "
            "model that would use it. Layers may have different CRS, pixel sizes and extents, and may be "
            "stored south-up or rotated: they are read through one common north-up grid, by default the "
            "optical layer's (else the first layer's). Layers without a CRS run in their own coordinates "
            "(with a warning) when none has one; mixed with layers that have one they are refused.</p>"
            "<p><b>Model.</b> <i>Automatic</i> (the default) takes the bundled package that uses the most "
            "of the given layers (ties: modalseg-sgma-urban) and logs why. Each package in the list shows "
            "its inputs and its held-out mIoU per input subset (whole areas it never trained on; validation "
            "strips for a package without them). Or point <i>Model file</i> to any "
            "ModalSeg package (.onnx with its .json beside it); the file wins over the list.</p>"
            "<p><b>Outputs.</b> <i>Classified raster</i>: one byte per pixel, class names and colours "
            "from the model, nodata outside the valid data. <i>Robustness</i>: one band per modality "
            "used (band description = modality), the share (0-1) of each modality in the decision; "
            "the shares sum to 1 per pixel; it loads as a colour composite (red, green, blue = the shares of "
            "up to three modalities, each stretched to its range). <i>Dominant modality</i>: which input "
            "leads at each pixel and by how much (its share, in steps of a tenth of the way from an even "
            "split to 1), one byte with a named colour per modality and step, so the legend says which "
            "colour is which input; it loads above the composite. <i>Class probabilities</i> (one band per class) and "
            "<i>Confidence</i> (top probability) are optional; their nodata value is -1. All outputs are "
            "GeoTIFF. An output that is one of the input files (links included), or two outputs in one "
            "file, stop the run before anything is read; a missing output folder is created. A failed run "
            "leaves no file.</p>"
            "<p><b>Advanced.</b> Tile size and overlap default to the model's; the blend window "
            "weights overlapping tiles so seams vanish. The network runs on a CUDA GPU when one is "
            "available (device <i>auto</i>). <i>Dask scheduler address</i> sends the blocks of the raster to a "
            "Dask cluster: the same files, bit for bit (each task uses as many runtime threads as this machine "
            "has cores, as a run here does). The same run without QGIS: <i>python -m modalseg segment --help</i>.</p>"
            "<p>Requires the Python package <i>onnxruntime</i> (and <i>torch</i> for the PyTorch runtime).</p>"
        )

    # -- parameters -----------------------------------------------------------------------
    def initAlgorithm(self, config: Optional[Dict[str, Any]] = None) -> None:  # noqa: N802 - QGIS API name
        add = self.add
        self.add_modality_parameters()
        self.add_model_parameters(
            "Model (bundled package)", "Model file (.onnx package; overrides the list above)",
            "Automatic: the bundled package that uses the most of the given layers. Or a package shipped "
            "with the plugin: each item names its inputs and its held-out mIoU per input subset.",
            "A ModalSeg model package: the .onnx graph with its .json metadata beside it, e.g. one written "
            "by fine-tuning.")

        add(QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size (pixels; 0 = model default)", NUMBER_INTEGER,
                                         defaultValue=0, minValue=0),
            "Side of the square tiles the network sees. Larger tiles give more context and use more memory.",
            advanced=True)
        add(QgsProcessingParameterNumber(self.OVERLAP, "Tile overlap (pixels; -1 = model default)", NUMBER_INTEGER,
                                         defaultValue=-1, minValue=-1),
            "How much neighbouring tiles overlap; overlapping predictions are blended.", advanced=True)
        add(QgsProcessingParameterEnum(self.BLEND, "Blend window for overlapping tiles", labels(BLEND_WINDOWS),
                                       defaultValue=0),
            "Weights given to a tile's pixels when overlapping tiles are averaged; smooth windows hide seams.",
            advanced=True)
        add(QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size (tiles per network call)", NUMBER_INTEGER,
                                         defaultValue=4, minValue=1, maxValue=256),
            "Tiles processed together; raise it on a large GPU, lower it if memory runs out.", advanced=True)
        add(QgsProcessingParameterEnum(self.DEVICE, "Device", labels(DEVICES), defaultValue=0),
            "Where the network runs. 'CUDA GPU' fails with a message if no usable GPU is found.", advanced=True)
        add(QgsProcessingParameterEnum(self.RUNTIME, "Runtime", labels(RUNTIMES), defaultValue=0),
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
        add(QgsProcessingParameterNumber(self.SMOOTHING, "Smoothing radius (pixels; 0 = off)", NUMBER_INTEGER,
                                         defaultValue=0, minValue=0, maxValue=25),
            "Majority filter: every pixel takes the most frequent class within this radius, which rounds "
            "ragged class edges. Applied before the minimum mapping unit.", advanced=True)
        add(QgsProcessingParameterNumber(self.GROUND_WINDOW, "Ground filter window for a DSM without a DTM (m)",
                                         NUMBER_DOUBLE, defaultValue=DEFAULT_GROUND_WINDOW_M, minValue=1.0),
            "When the elevation layer is a DSM and no DTM is given, the DTM is estimated from the DSM by a "
            "ground filter: anything narrower than this window (buildings, trees) is taken off the ground. "
            "Make it wider than the largest building.", advanced=True)
        add(QgsProcessingParameterBoolean(self.CLOUD_OPTIMIZED, "Write Cloud-Optimized GeoTIFFs (with overviews)",
                                          defaultValue=False),
            "Rewrites every output as a COG at the end (internal overviews: most frequent class for the "
            "class map, mean for shares): faster to display when zoomed out and to serve over HTTP, at the "
            "cost of one more pass over the files.", advanced=True)
        add(QgsProcessingParameterEnum(self.PRECISION, "Precision", labels(PRECISIONS), defaultValue=0),
            "Which graph of the model runs. Auto: the int8 graph on the CPU and the fp16 graph on a CUDA GPU "
            "when the package ships them (Quantise a model writes them; their accuracy cost is in the "
            "package metadata), else fp32. The log says which graph ran and why.", advanced=True)
        add(QgsProcessingParameterEnum(self.SAR_SCALE, "SAR layer values", labels(SAR_SCALES), defaultValue=0),
            "Whether the SAR layer holds backscatter in dB or linear power (intensity, sigma0). SAR models "
            "take dB: linear power is converted (10 log10) before normalisation. Auto decides from the values "
            "and says why in the log; complex samples (SLC) are always turned into intensity, with a warning.",
            advanced=True)
        add(QgsProcessingParameterString(self.DASK_SCHEDULER, "Dask scheduler address (optional)", optional=True),
            "Sends the blocks of the raster to an existing Dask cluster, e.g. tcp://host:8786 (or local:N for N "
            "worker processes on this machine); empty = run here. Every worker must read the input layers, the "
            "model package and the output folder at the same paths. Needs the Python packages dask and "
            "distributed (Install dependencies, profile 'distributed').", advanced=True)

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
        add(QgsProcessingParameterRasterDestination(self.DOMINANT, "Dominant modality (which input leads, by how much)",
                                                    optional=True, createByDefault=True),
            "One byte per pixel naming the modality with the largest share and how large that share is "
            "(from an even split to 1, in ten steps); its legend names each modality's colour.")

    # -- run ------------------------------------------------------------------------------
    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: Optional[QgsProcessingFeedback]) -> Dict[str, Any]:
        feedback = feedback or QgsProcessingFeedback()
        runtime = key_at(RUNTIMES, self.parameterAsEnum(parameters, self.RUNTIME, context))
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

        layers = self.layer_inputs(engine, parameters, context)
        outputs = self._output_paths(engine, parameters, context)
        try:  # before anything is read: an output must never replace an input
            engine.check_outputs(outputs, [layer.path for layer in layers.values()])
            failure = None
        except engine.EngineError as exc:
            failure = str(exc)
        if failure is not None:
            raise QgsProcessingException(failure)
        package = self.load_model(engine, parameters, context, feedback)
        feedback.pushInfo(f"Model: {package.metadata.name} {package.metadata.version} "
                          f"({package.metadata.architecture}) from {package.onnx_path}")

        created_folders = []
        try:
            # Processing users expect a typed-in output folder to be created for them
            created_folders = engine.create_output_folders(outputs)
            sources, binding_messages = engine.bind_modalities(package.metadata, layers, self.bundled_metadata)
            for message in binding_messages:
                self.engine_log(feedback, message)
            report = engine.run_segmentation(
                sources, package, self._grid_request(engine, parameters, context), outputs,
                self._run_options(engine, parameters, context, runtime),
                progress=lambda fraction, message: self.report_progress(feedback, fraction, message),
                log=lambda text: self.engine_log(feedback, text),
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
            engine.remove_created_folders(created_folders)
            raise QgsProcessingException(failure)

        self._log_report(feedback, package.metadata, report)
        self._advise_on_an_unused_gpu(feedback, parameters, context, report)
        styles = output_styles((c.value, c.name, c.color) for c in package.metadata.classes)
        input_name = input_layer_name(self, parameters, context, self.INPUT_LAYER_PARAMETERS)
        results: Dict[str, Any] = {}
        for name, path in ((self.OUTPUT, outputs.classes), (self.ROBUSTNESS, outputs.robustness),
                           (self.PROBABILITIES, outputs.probabilities), (self.CONFIDENCE, outputs.confidence),
                           (self.DOMINANT, outputs.dominant)):
            results[name] = path
            if path:
                style_when_loaded(context, path, styles[name], name, input_name)
        return results

    def _output_paths(self, engine: Any, parameters: Dict[str, Any], context: QgsProcessingContext) -> Any:
        paths: Dict[str, Optional[str]] = {}
        for name in (self.OUTPUT, self.ROBUSTNESS, self.PROBABILITIES, self.CONFIDENCE, self.DOMINANT):
            path = self.parameterAsOutputLayer(parameters, name, context) if is_set(parameters, name) else None
            if path and not path.lower().endswith(GEOTIFF_SUFFIXES):
                raise QgsProcessingException(
                    f"ModalSeg writes GeoTIFF only; give the output '{name}' a .tif file name instead of '{path}'.")
            paths[name] = path or None
        if not paths[self.OUTPUT]:
            raise QgsProcessingException("The classified raster output (OUTPUT) needs a file name.")
        return engine.OutputPaths(classes=paths[self.OUTPUT], robustness=paths[self.ROBUSTNESS],
                                  probabilities=paths[self.PROBABILITIES], confidence=paths[self.CONFIDENCE],
                                  dominant=paths[self.DOMINANT])

    def _grid_request(self, engine: Any, parameters: Dict[str, Any], context: QgsProcessingContext) -> Any:
        crs = self.parameterAsCrs(parameters, self.OUTPUT_CRS, context) if is_set(
            parameters, self.OUTPUT_CRS) else QgsCoordinateReferenceSystem()
        extent = extent_crs = None
        if is_set(parameters, self.OUTPUT_EXTENT):
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
        network_loader = None
        if runtime == "torch":  # the engine does not import models: the adapter hands it the network loader
            from ..models.networks.registry import load_network  # lazy: pulls torch

            network_loader = load_network
        return engine.RunOptions(
            tile_size=tile_size if tile_size > 0 else None,
            overlap=overlap if overlap >= 0 else None,
            batch_size=max(1, self.parameterAsInt(parameters, self.BATCH_SIZE, context)),
            device=key_at(DEVICES, self.parameterAsEnum(parameters, self.DEVICE, context)),
            runtime=runtime,
            network_loader=network_loader,
            blend=key_at(BLEND_WINDOWS, self.parameterAsEnum(parameters, self.BLEND, context)),
            min_mapping_unit=self.parameterAsInt(parameters, self.MIN_MAPPING_UNIT, context),
            smoothing_radius=self.parameterAsInt(parameters, self.SMOOTHING, context),
            cloud_optimized=self.parameterAsBoolean(parameters, self.CLOUD_OPTIMIZED, context),
            ground_window_m=self.parameterAsDouble(parameters, self.GROUND_WINDOW, context),
            precision=key_at(PRECISIONS, self.parameterAsEnum(parameters, self.PRECISION, context)),
            scheduler=self.parameterAsString(parameters, self.DASK_SCHEDULER, context).strip() or None)

    def _advise_on_an_unused_gpu(self, feedback: QgsProcessingFeedback, parameters: Dict[str, Any],
                                 context: QgsProcessingContext, report: Any) -> None:
        from ..environment import unused_gpu_advice

        advice = unused_gpu_advice(key_at(DEVICES, self.parameterAsEnum(parameters, self.DEVICE, context)),
                                   report.device, INSTALL_CUDA_BUILD)
        if advice:
            self.engine_log(feedback, f"{WARNING_PREFIX}{advice}.")

    @staticmethod
    def _log_report(feedback: QgsProcessingFeedback, metadata: Any, report: Any) -> None:
        feedback.pushInfo(f"Ran {report.tiles} tiles on {report.device} in {report.seconds:.1f} s "
                          f"({report.model_seconds:.1f} s in the model).")
        names = {c.value: c.name for c in metadata.classes}
        total = sum(report.class_counts.values()) or 1
        for value, count in sorted(report.class_counts.items()):
            feedback.pushInfo(f"  class {value} {names.get(value, '?')}: {count} px ({100.0 * count / total:.1f} %)")
