"""Renderers for ModalSeg outputs, and the layer post-processor that applies them on load.

The classified GeoTIFF already carries a colour table and category names, so GDAL alone gives a
palette; the renderer is still set explicitly so that every QGIS version shows the package's
class names, and so that the overlays (robustness, confidence) get colours and transparency
suited to being laid over the class map. The robustness layer shows every modality at once: an
RGB composite of up to three modality shares (band descriptions name them in the legend), each
stretched to the range the written file holds, since shares that vary little (0.14-0.25) would
otherwise read as one flat tint. The dominant-modality layer (engine.dominant) is paletted: its
legend lists, for each modality, the share steps the file holds, the hue deepening with the share
over the steps present. Loaded outputs are named after the input ("classes - ortho") and stacked
in a fixed order: the class map at the bottom, the overlays above it, the named one on top.
"""
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from qgis.core import (
    QgsColorRampShader,
    QgsContrastEnhancement,
    QgsMapLayerLegend,
    QgsMultiBandColorRenderer,
    QgsPalettedRasterRenderer,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRasterSymbolLegendNode,
    QgsSingleBandPseudoColorRenderer,
)
from qgis.PyQt.QtGui import QColor

from .base import is_set
from .compat import STATS_MAX, STATS_MEAN, STATS_MIN

# (value, name, "#rrggbb"), as the model package lists its classes.
ClassStyle = Tuple[int, str, str]

# Perceptually uniform (viridis-like) ramp: a share of 0 reads dark, 1 reads bright yellow.
SHARE_RAMP = ((0.0, "#440154"), (0.25, "#3b528b"), (0.5, "#21918c"), (0.75, "#5ec962"), (1.0, "#fde725"))
# Confidence: low confidence stands out in red, high confidence fades to pale grey.
CONFIDENCE_RAMP = ((0.0, "#b2182b"), (0.5, "#f4a582"), (1.0, "#f7f7f7"))
OVERLAY_OPACITY = 0.6
COMPOSITE_BANDS = 3  # red, green, blue: the shares of the (up to) three main modalities
COMPOSITE_CHANNELS = (("red", "#ff0000"), ("green", "#00ff00"), ("blue", "#0000ff"))
STATS_SAMPLE_SIZE = 250000  # QGIS's own sample for estimated statistics: exact on small rasters, fast on big ones
# Output kinds of ``segment``, bottom to top in the layer tree, and the name each loads under.
LAYER_ORDER = ("OUTPUT", "PROBABILITIES", "CONFIDENCE", "ROBUSTNESS", "DOMINANT")
LAYER_NAMES = {"OUTPUT": "classes", "PROBABILITIES": "probabilities", "CONFIDENCE": "confidence",
               "ROBUSTNESS": "robustness", "DOMINANT": "dominant modality"}


def apply_classified_style(layer: QgsRasterLayer, classes: Iterable[ClassStyle]) -> None:
    """Paletted renderer on band 1 with one entry per model class (name and colour)."""
    entries = [QgsPalettedRasterRenderer.Class(int(value), QColor(color), str(name))
               for value, name, color in classes]
    renderer = QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def _pseudocolor_renderer(layer: QgsRasterLayer, band: int, stops, minimum: float,
                          maximum: float) -> QgsSingleBandPseudoColorRenderer:
    ramp_shader = QgsColorRampShader(minimum, maximum)
    ramp_shader.setColorRampItemList(
        [QgsColorRampShader.ColorRampItem(minimum + value * (maximum - minimum), QColor(color),
                                          f"{minimum + value * (maximum - minimum):g}")
         for value, color in stops])
    shader = QgsRasterShader(minimum, maximum)
    shader.setRasterShaderFunction(ramp_shader)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), band, shader)
    renderer.setClassificationMin(minimum)
    renderer.setClassificationMax(maximum)
    return renderer


def apply_share_style(layer: QgsRasterLayer, band: int = 1, opacity: float = OVERLAY_OPACITY) -> None:
    """Semi-transparent 0..1 colour ramp on one band (a class probability)."""
    renderer = _pseudocolor_renderer(layer, band, SHARE_RAMP, 0.0, 1.0)
    renderer.setOpacity(opacity)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def band_range(layer: QgsRasterLayer, band: int) -> Tuple[float, float, float]:
    """(minimum, maximum, mean) of a band, from the file's statistics (nodata left out)."""
    stats = layer.dataProvider().bandStatistics(band, STATS_MIN | STATS_MAX | STATS_MEAN, layer.extent(),
                                                STATS_SAMPLE_SIZE)
    return stats.minimumValue, stats.maximumValue, stats.mean


def _stretch(layer: QgsRasterLayer, band: int, minimum: float, maximum: float) -> QgsContrastEnhancement:
    enhancement = QgsContrastEnhancement(layer.dataProvider().dataType(band))
    enhancement.setContrastEnhancementAlgorithm(
        QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum)
    enhancement.setMinimumValue(minimum)
    enhancement.setMaximumValue(maximum)
    return enhancement


def _spread(minimum: float, maximum: float) -> Tuple[float, float]:
    """A range a stretch can use: a constant share (one modality: 1 everywhere) keeps a width."""
    if maximum > minimum:
        return minimum, maximum
    return minimum - 0.5, maximum + 0.5


class CompositeLegend(QgsMapLayerLegend):
    """The robustness composite's legend: one swatch per channel naming its modality and the share
    range the stretch spans (QGIS's own would read "Band 1: optical (Gray)", naming no colour).
    Set on the loaded layer; a project saved and opened again falls back to QGIS's own."""

    def __init__(self, entries: Sequence[Tuple[str, str]]):
        super().__init__()
        self._entries = list(entries)  # (colour, label)

    def createLayerTreeModelLegendNodes(self, node_layer):  # noqa: N802 - QGIS API name
        return [QgsRasterSymbolLegendNode(node_layer, QColor(colour), label) for colour, label in self._entries]


def _modality_of_band(layer: QgsRasterLayer, band: int) -> str:
    """The band's description (the modality), without QGIS's "Band 1: " prefix."""
    return layer.bandName(band).split(": ", 1)[-1]


def apply_robustness_style(layer: QgsRasterLayer, opacity: float = OVERLAY_OPACITY) -> None:
    """Every modality's share at once: red, green, blue = the shares of the three modalities with the
    largest mean share (in band order), each stretched to its minimum and maximum in the file, with a
    legend naming each colour's modality; a single modality gets the share ramp over its range."""
    ranges = {band: band_range(layer, band) for band in range(1, layer.bandCount() + 1)}
    if len(ranges) == 1:
        renderer = _pseudocolor_renderer(layer, 1, SHARE_RAMP, *_spread(*ranges[1][:2]))
    else:
        main = sorted(sorted(ranges, key=lambda band: -ranges[band][2])[:COMPOSITE_BANDS])
        bands = main + [-1] * (COMPOSITE_BANDS - len(main))  # -1: that colour stays unused
        renderer = QgsMultiBandColorRenderer(layer.dataProvider(), *bands)
        # handed over one by one: each setter takes ownership of its enhancement
        for band, set_enhancement in zip(bands, (renderer.setRedContrastEnhancement,
                                                 renderer.setGreenContrastEnhancement,
                                                 renderer.setBlueContrastEnhancement)):
            if band > 0:
                set_enhancement(_stretch(layer, band, *_spread(*ranges[band][:2])))
        layer.setLegend(CompositeLegend(
            [(colour, f"{name}: {_modality_of_band(layer, band)} share, {ranges[band][0]:.2f} (dark) to "
                      f"{ranges[band][1]:.2f} (full {name})")
             for band, (name, colour) in zip(bands, COMPOSITE_CHANNELS) if band > 0]))
    renderer.setOpacity(opacity)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def _categories_present(path: str) -> Dict[int, str]:
    """Category name of each pixel value a one-byte raster holds (GDAL's exact histogram; nodata and
    unnamed values left out)."""
    from osgeo import gdal

    dataset = gdal.Open(path)  # kept in a name: a band must not outlive its dataset
    if dataset is None:  # gone since the run (GDAL's exceptions are off here): nothing to list
        return {}
    band = dataset.GetRasterBand(1)
    nodata = band.GetNoDataValue()  # first: it loads the .aux.xml, which GetCategoryNames alone does not (GDAL 3.6)
    names = list(band.GetCategoryNames() or [])
    counts = band.GetHistogram(-0.5, 255.5, 256, include_out_of_range=0, approx_ok=0)
    band = dataset = None
    return {value: names[value] for value, count in enumerate(counts)
            if count and value != nodata and value < len(names) and names[value]}


def apply_dominant_style(layer: QgsRasterLayer, opacity: float = OVERLAY_OPACITY) -> None:
    """Paletted renderer with one entry per (modality, share step) the file holds, named from the
    file's categories; each modality's hue runs from pale to full over the steps present."""
    from ..engine import dominant  # needs numpy: loaded when a layer is styled, not with the plugin

    names = _categories_present(layer.source())
    present = sorted(names)
    steps: Dict[int, List[int]] = {}
    for value in present:
        modality, step = dominant.decode(value)
        steps.setdefault(modality, []).append(step)
    entries = []
    for value in present:
        modality, step = dominant.decode(value)
        held = steps[modality]
        strength = 1.0 if len(held) == 1 else (held.index(step) + 1) / len(held)
        entries.append(QgsPalettedRasterRenderer.Class(value, QColor(dominant.colour(modality, strength)),
                                                       names[value]))
    renderer = QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries)
    renderer.setOpacity(opacity)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def apply_confidence_style(layer: QgsRasterLayer, opacity: float = OVERLAY_OPACITY) -> None:
    """Semi-transparent ramp on the confidence band, low confidence in red."""
    renderer = _pseudocolor_renderer(layer, 1, CONFIDENCE_RAMP, 0.0, 1.0)
    renderer.setOpacity(opacity)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


class StyleOnLoad(QgsProcessingLayerPostProcessorInterface):
    """Applies a styling function to an output layer once Processing has loaded it."""

    def __init__(self, style: Callable[[QgsRasterLayer], None]):
        super().__init__()
        self._style = style

    def postProcessLayer(self, layer, context: QgsProcessingContext,  # noqa: N802 - QGIS API name
                         feedback: QgsProcessingFeedback) -> None:
        if isinstance(layer, QgsRasterLayer) and layer.isValid():
            self._style(layer)


# Processing keeps only a raw C++ pointer to a post-processor; a Python subclass with no other
# reference can be garbage-collected before QGIS calls it (a crash, or silently no style).
# Every post-processor handed to QGIS is therefore also kept here, for the life of the session.
_KEEP_ALIVE: List[StyleOnLoad] = []


def input_layer_name(algorithm: QgsProcessingAlgorithm, parameters: Dict[str, Any], context: QgsProcessingContext,
                     layer_parameters: Sequence[str]) -> str:
    """Name of the first given input layer (the reference layer of the output grid); empty if none."""
    for name in layer_parameters:
        if is_set(parameters, name):
            layer = algorithm.parameterAsRasterLayer(parameters, name, context)
            if layer is not None:
                return layer.name()
    return ""


def output_layer_name(kind: str, input_name: str) -> str:
    """``classes - ortho_2024``: repeated runs on other inputs can be told apart in the layer tree."""
    base = LAYER_NAMES.get(kind, kind.lower())
    return f"{base} - {input_name}" if input_name else base


def style_when_loaded(context: QgsProcessingContext, output_path: str, style: Callable[[QgsRasterLayer], None],
                      kind: Optional[str] = None, input_name: str = "") -> bool:
    """Arrange for ``style`` to run when ``output_path`` is loaded on completion; False if it won't be.

    With the output ``kind``, the layer is also named after the input and given its place in
    ``LAYER_ORDER`` (Processing adds layers in ascending sort key, each above the previous one)."""
    if not output_path or not context.willLoadLayerOnCompletion(output_path):
        return False
    post_processor = StyleOnLoad(style)
    _KEEP_ALIVE.append(post_processor)
    details = context.layerToLoadOnCompletionDetails(output_path)
    details.setPostProcessor(post_processor)
    if kind is not None:
        details.name = output_layer_name(kind, input_name)
        if hasattr(details, "forceName"):  # QGIS 3.32+: even with "use file name as layer name"
            details.forceName = True
        if kind in LAYER_ORDER and hasattr(details, "layerSortKey"):  # QGIS 3.32+
            details.layerSortKey = 1 + LAYER_ORDER.index(kind)  # 0 means "unsorted"
    return True


def output_styles(classes: Iterable[ClassStyle]) -> Dict[str, Callable[[QgsRasterLayer], None]]:
    """Styling function per output kind of ``segment`` (keys match the algorithm's outputs)."""
    class_list = list(classes)
    return {
        "OUTPUT": lambda layer: apply_classified_style(layer, class_list),
        "ROBUSTNESS": apply_robustness_style,
        "PROBABILITIES": lambda layer: apply_share_style(layer, 1),
        "CONFIDENCE": apply_confidence_style,
        "DOMINANT": apply_dominant_style,
    }
