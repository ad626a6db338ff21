"""Renderers for ModalSeg outputs, and the layer post-processor that applies them on load.

The classified GeoTIFF already carries a colour table and category names, so GDAL alone gives a
palette; the renderer is still set explicitly so that every QGIS version shows the package's
class names, and so that the overlays (robustness, confidence) get a ramp and transparency
suited to being laid over the inputs.
"""
from typing import Callable, Dict, Iterable, List, Tuple

from qgis.core import (
    QgsColorRampShader,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
)
from qgis.PyQt.QtGui import QColor

# (value, name, "#rrggbb"), as the model package lists its classes.
ClassStyle = Tuple[int, str, str]

# Perceptually uniform (viridis-like) ramp: a share of 0 reads dark, 1 reads bright yellow.
SHARE_RAMP = ((0.0, "#440154"), (0.25, "#3b528b"), (0.5, "#21918c"), (0.75, "#5ec962"), (1.0, "#fde725"))
# Confidence: low confidence stands out in red, high confidence fades to pale grey.
CONFIDENCE_RAMP = ((0.0, "#b2182b"), (0.5, "#f4a582"), (1.0, "#f7f7f7"))
OVERLAY_OPACITY = 0.6


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
    """Semi-transparent 0..1 colour ramp on one band (robustness share or class probability)."""
    renderer = _pseudocolor_renderer(layer, band, SHARE_RAMP, 0.0, 1.0)
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


def style_when_loaded(context: QgsProcessingContext, output_path: str,
                      style: Callable[[QgsRasterLayer], None]) -> bool:
    """Arrange for ``style`` to run when ``output_path`` is loaded on completion; False if it won't be."""
    if not output_path or not context.willLoadLayerOnCompletion(output_path):
        return False
    post_processor = StyleOnLoad(style)
    _KEEP_ALIVE.append(post_processor)
    context.layerToLoadOnCompletionDetails(output_path).setPostProcessor(post_processor)
    return True


def output_styles(classes: Iterable[ClassStyle]) -> Dict[str, Callable[[QgsRasterLayer], None]]:
    """Styling function per output kind of ``segment`` (keys match the algorithm's outputs)."""
    class_list = list(classes)
    return {
        "OUTPUT": lambda layer: apply_classified_style(layer, class_list),
        "ROBUSTNESS": lambda layer: apply_share_style(layer, 1),
        "PROBABILITIES": lambda layer: apply_share_style(layer, 1),
        "CONFIDENCE": apply_confidence_style,
    }
