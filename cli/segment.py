"""``python -m modalseg segment``: the Processing algorithm ``modalseg:segment`` as a command.

The same inputs and options; the choices are the keys of ``engine.vocabulary``; every check is the
engine's (binding, outputs, grid, values), so a bad input gets the same one-sentence message.
"""
import argparse
import signal
from pathlib import Path
from typing import Any, Dict, Tuple

from ..engine.errors import WARNING_PREFIX
from ..engine.vocabulary import (BLEND_WINDOWS, DEFAULT_GROUND_WINDOW_M, DEVICES, ELEVATION_TYPES, OPTICAL_TYPES,
                                 PRECISIONS, RUNTIMES, SAR_SCALES, keys)
from ..environment import unused_gpu_advice
from ..processing_provider.paths import BUNDLED_MODELS_DIR, DEFAULT_BUNDLED_MODEL
from .progress import ProgressBar

NAME = "segment"
AUTOMATIC = "auto"
DESCRIPTION = f"""\
Classifies every pixel of an area from the rasters you have for it - an optical image, a DSM or
nDSM (optionally with a DTM), a SAR scene, a NIR band - with a multimodal segmentation network, and
maps how much each input drove the decision.

Inputs: give at least one layer. The model decides which inputs it uses and which it requires; the
log says how each layer was bound. Bands are written 4,3,2 or 4;3;2 (empty = the layer's first
bands). A layer or band the model does not use is named in a warning. Layers may differ in CRS,
pixel size and extent: they are read through one north-up grid, by default the optical layer's
(else the first layer's). A layer may be a raster file, a .vrt, or a folder of sheets (one mosaic).

Model: 'auto' (the default) takes the bundled package that uses the most of the given layers (ties:
{DEFAULT_BUNDLED_MODEL}); or a bundled package's name (python -m modalseg models lists them); or a
package file (.onnx with its .json beside it, or its folder).

Outputs: the class map (one byte per pixel, class names and colours from the model), robustness
(one band per modality used: its share of the decision, 0-1), class probabilities and confidence
(nodata -1), the dominant modality (which input leads, by how much). All GeoTIFF; a failed or
cancelled run (Ctrl-C) leaves no file.

Cluster: --dask local:N runs the blocks of the raster on N local worker processes, --dask
tcp://host:8786 on an existing Dask cluster whose workers read the inputs, the package and the
output folder at the same paths. With the same blocks (--block-tile-rows) and runtime threads
(--threads) the outputs are bit-identical to a run without --dask.

Exit codes: 0 done, 1 the run failed (the message says why), 2 wrong usage, 130 cancelled."""


def _choices(vocabulary) -> str:
    return "; ".join(f"{key}: {label}" for key, label in vocabulary)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(NAME, help="segment rasters with a model package (modalseg:segment)",
                                 description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    layers = parser.add_argument_group("input layers (at least one)")
    layers.add_argument("--optical", metavar="RASTER", help="orthophoto or satellite image (RGB or multispectral)")
    layers.add_argument("--optical-bands", metavar="BANDS", help="optical bands in the model's order, e.g. 1,2,3 "
                        "(false-colour infrared: its near-infrared, red, green)")
    layers.add_argument("--optical-type", choices=keys(OPTICAL_TYPES), default=OPTICAL_TYPES[0][0],
                        help=_choices(OPTICAL_TYPES))
    layers.add_argument("--elevation", metavar="RASTER", help="elevation: DSM or nDSM, in metres")
    layers.add_argument("--elevation-band", metavar="BAND", help="band of the elevation layer (default 1)")
    layers.add_argument("--elevation-type", choices=keys(ELEVATION_TYPES), default=ELEVATION_TYPES[0][0],
                        help=_choices(ELEVATION_TYPES))
    layers.add_argument("--dtm", metavar="RASTER", help="terrain model (bare earth, metres): turns a DSM into an nDSM")
    layers.add_argument("--sar", metavar="RASTER", help="SAR image (intensity, dB or linear)")
    layers.add_argument("--sar-bands", metavar="BANDS", help="SAR bands in the model's order, e.g. 1,2 for VV,VH")
    layers.add_argument("--sar-scale", choices=keys(SAR_SCALES), default=SAR_SCALES[0][0], help=_choices(SAR_SCALES))
    layers.add_argument("--nir", metavar="RASTER", help="near-infrared image, when separate from the optical one")
    layers.add_argument("--nir-band", metavar="BAND", help="band of the NIR layer (default 1)")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default=AUTOMATIC, metavar="NAME|FILE",
                       help=f"'{AUTOMATIC}' (default), a bundled package's name, or a package file or folder")

    outputs = parser.add_argument_group("outputs (GeoTIFF)")
    outputs.add_argument("--output", "-o", required=True, metavar="TIF", help="classified raster")
    outputs.add_argument("--robustness", metavar="TIF", help="share of each modality (one band per modality used)")
    outputs.add_argument("--probabilities", metavar="TIF", help="class probabilities (one band per class)")
    outputs.add_argument("--confidence", metavar="TIF", help="top class probability")
    outputs.add_argument("--dominant", metavar="TIF", help="dominant modality: which input leads at each pixel, "
                         "and by how much")

    advanced = parser.add_argument_group("advanced")
    advanced.add_argument("--tile-size", type=int, default=0, metavar="PX", help="tile side (0 = the model's)")
    advanced.add_argument("--overlap", type=int, default=-1, metavar="PX", help="tile overlap (-1 = the model's)")
    advanced.add_argument("--blend", choices=keys(BLEND_WINDOWS), default=BLEND_WINDOWS[0][0],
                          help=_choices(BLEND_WINDOWS))
    advanced.add_argument("--batch-size", type=int, default=4, metavar="N", help="tiles per network call")
    advanced.add_argument("--device", choices=keys(DEVICES), default=DEVICES[0][0], help=_choices(DEVICES))
    advanced.add_argument("--runtime", choices=keys(RUNTIMES), default=RUNTIMES[0][0], help=_choices(RUNTIMES))
    advanced.add_argument("--precision", choices=keys(PRECISIONS), default=PRECISIONS[0][0],
                          help=_choices(PRECISIONS))
    advanced.add_argument("--threads", type=int, metavar="N", help="runtime threads (default: this machine's cores)")
    advanced.add_argument("--output-crs", metavar="CRS", help="output CRS (EPSG:2154, WKT...; default the "
                          "reference layer's)")
    advanced.add_argument("--output-extent", metavar="XMIN,YMIN,XMAX,YMAX",
                          help="area to segment, in --extent-crs (default the output CRS)")
    advanced.add_argument("--extent-crs", metavar="CRS", help="CRS of --output-extent")
    advanced.add_argument("--output-resolution", type=float, default=0.0, metavar="SIZE",
                          help="output pixel size in output CRS units (0 = the reference layer's)")
    advanced.add_argument("--min-mapping-unit", type=int, default=0, metavar="PX",
                          help="merge class patches smaller than this into their surroundings (0 = off)")
    advanced.add_argument("--smoothing", type=int, default=0, metavar="PX",
                          help="majority filter radius, applied before the minimum mapping unit (0 = off)")
    advanced.add_argument("--ground-window", type=float, default=DEFAULT_GROUND_WINDOW_M, metavar="M",
                          help="ground filter window estimating the DTM of a DSM given without one")
    advanced.add_argument("--cog", action="store_true", help="write Cloud-Optimized GeoTIFFs (with overviews)")
    advanced.add_argument("--block-tile-rows", type=int, default=0, metavar="N",
                          help="tile rows per block of work (0 = all); blocks are what --dask hands to workers")
    advanced.add_argument("--dask", metavar="SCHEDULER",
                          help="run the blocks on Dask: local:N (N local worker processes) or tcp://host:port")
    parser.set_defaults(run=run)


def _layers(engine: Any, args: argparse.Namespace) -> Dict[str, Any]:
    given = {"optical": (args.optical, args.optical_bands), "elevation": (args.elevation, args.elevation_band),
             "dtm": (args.dtm, None), "sar": (args.sar, args.sar_bands), "nir": (args.nir, args.nir_band)}
    layers = {}
    for role, (path, bands) in given.items():
        if path:
            band_list = engine.parse_band_list(bands, f"--{role}-band{'s' if role in ('optical', 'sar') else ''}")
            layers[role] = engine.LayerInput(path, bands=band_list,
                                             elevation_type=args.elevation_type if role == "elevation" else "auto",
                                             sar_scale=args.sar_scale if role == "sar" else "auto",
                                             optical_type=args.optical_type if role == "optical" else "rgb")
    return layers


def _package(engine: Any, args: argparse.Namespace, layers: Dict[str, Any], log) -> Tuple[Any, list]:
    """The package ``--model`` names, and the bundled packages' metadata (for the binding's warnings)."""
    bundled = engine.list_packages(BUNDLED_MODELS_DIR, first=DEFAULT_BUNDLED_MODEL)  # none when the folder is gone
    candidates = [meta for _, meta in bundled]
    if args.model == AUTOMATIC:
        choice = engine.choose_package(candidates, layers, DEFAULT_BUNDLED_MODEL)
        log(choice.reason[0].upper() + choice.reason[1:])
        return engine.load_package(bundled[choice.index][0]), candidates
    named = [path for path, meta in bundled if meta.name == args.model]
    if named:
        return engine.load_package(named[0]), candidates
    if not Path(args.model).exists():
        names = ", ".join(meta.name for meta in candidates) or "none"
        raise engine.EngineError(f"model '{args.model}' is neither a bundled package ({names}) nor a file")
    return engine.load_package(args.model), candidates


def _crs_wkt(engine: Any, text: str, option: str) -> str:
    """A CRS as users write it (EPSG:2154, a WKT, a PROJ string) as WKT; QGIS's CRS parameter does
    this in the plugin."""
    from osgeo import osr

    srs = osr.SpatialReference()
    try:
        ok = srs.SetFromUserInput(text) == 0
    except RuntimeError:
        ok = False
    if not ok:
        raise engine.EngineError(f"{option} '{text}' is not a CRS GDAL knows (write e.g. EPSG:2154)")
    return srs.ExportToWkt()


def _grid_request(engine: Any, args: argparse.Namespace) -> Any:
    extent = None
    if args.output_extent:
        try:
            extent = tuple(float(v) for v in args.output_extent.split(","))
        except ValueError:
            extent = ()
        if len(extent) != 4 or extent[0] >= extent[2] or extent[1] >= extent[3]:
            raise engine.EngineError(f"--output-extent '{args.output_extent}' is not xmin,ymin,xmax,ymax with "
                                     "xmin < xmax and ymin < ymax")
    crs = _crs_wkt(engine, args.output_crs, "--output-crs") if args.output_crs else None
    extent_crs = _crs_wkt(engine, args.extent_crs, "--extent-crs") if args.extent_crs else None
    return engine.GridRequest(crs_wkt=crs, extent=extent, extent_crs_wkt=extent_crs,
                              resolution=args.output_resolution if args.output_resolution > 0 else None)


def _options(engine: Any, args: argparse.Namespace) -> Any:
    network_loader = None
    if args.runtime == "torch":  # the engine does not import models: the caller hands it the network loader
        from ..models.networks.registry import load_network  # lazy: pulls torch

        network_loader = load_network
    return engine.RunOptions(
        tile_size=args.tile_size or None, overlap=args.overlap if args.overlap >= 0 else None,
        batch_size=max(1, args.batch_size), device=args.device, runtime=args.runtime, blend=args.blend,
        min_mapping_unit=args.min_mapping_unit, smoothing_radius=args.smoothing, threads=args.threads,
        tile_rows_per_block=max(0, args.block_tile_rows), cloud_optimized=args.cog,
        ground_window_m=args.ground_window, network_loader=network_loader, precision=args.precision,
        scheduler=args.dask or None)


class _Interrupt:
    """Ctrl-C asks the engine to stop (it removes what it wrote); a second Ctrl-C stops at once."""

    def __init__(self):
        self.asked = False
        self.previous = signal.signal(signal.SIGINT, self._ask)

    def _ask(self, signum, frame) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self.previous)


def run(args: argparse.Namespace, log=print) -> int:
    from .. import engine

    with engine.gdal_mode.gdal_exceptions():
        layers = _layers(engine, args)
        outputs = engine.OutputPaths(args.output, args.robustness, args.probabilities, args.confidence, args.dominant)
        engine.check_outputs(outputs, [layer.path for layer in layers.values()])
        package, candidates = _package(engine, args, layers, log)
        log(f"Model: {package.metadata.name} {package.metadata.version} ({package.metadata.architecture}) "
            f"from {package.onnx_path}")
        grid_request = _grid_request(engine, args)
        options = _options(engine, args)
        created = engine.create_output_folders(outputs)
        bar, interrupt = ProgressBar(), _Interrupt()
        try:
            sources, messages = engine.bind_modalities(package.metadata, layers, candidates)
            for message in messages:
                log(message)
            report = engine.run_segmentation(sources, package, grid_request, outputs, options, progress=bar,
                                             log=log, is_cancelled=lambda: interrupt.asked)
        except BaseException:
            engine.remove_created_folders(created)
            raise
        finally:
            interrupt.restore()
            bar.close()
    log(f"Ran {report.tiles} tiles on {report.device} in {report.seconds:.1f} s ({report.model_seconds:.1f} s in "
        "the model).")
    advice = unused_gpu_advice(args.device, report.device, "Install onnxruntime-gpu in place of onnxruntime "
                               "(pip install onnxruntime-gpu)")
    if advice:
        log(f"{WARNING_PREFIX}{advice}.")
    names = {c.value: c.name for c in package.metadata.classes}
    total = sum(report.class_counts.values()) or 1
    for value, count in sorted(report.class_counts.items()):
        log(f"  class {value} {names.get(value, '?')}: {count} px ({100.0 * count / total:.1f} %)")
    for name, path in report.outputs.items():
        log(f"{name}: {path}")
    return 0
