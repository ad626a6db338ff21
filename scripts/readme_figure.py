"""Render the README figure from a real run: ``modalseg:segment`` on the bundled demo tile, loaded and
styled as the plugin loads it, drawn by QGIS's own map renderer (headless) into docs/.

    .venv/bin/python scripts/readme_figure.py [output.png]

Four panels side by side: the orthophoto, the class map, the robustness composite and the dominant
modality, each over the class map (as the layers stack in QGIS), with its title; under each
overlay, its legend as the QGIS layer tree shows it (swatch and text).
"""
import os
import sys
import tempfile
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo" / "lidarprod_870000_6618000"
DEFAULT_OUTPUT = ROOT / "docs" / "segment_demo.png"
SCALE = 3  # output pixels per demo pixel (the tile is 200 x 125 px)
TITLE_HEIGHT = 28
LEGEND_LINE = 18  # pixels per legend entry


def _plugin_on_path() -> None:
    """Expose the checkout as the package ``modalseg`` (its folder may be named anything)."""
    folder = Path(tempfile.mkdtemp(prefix="modalseg-figure-"))
    (folder / "modalseg").symlink_to(ROOT, target_is_directory=True)
    sys.path.insert(0, str(folder))
    sys.path.append("/usr/share/qgis/python/plugins")  # Debian's Processing plugin
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _render(layers: List, width: int, height: int):
    """One panel: the layers (top first) drawn over their common extent by a map renderer job."""
    from qgis.core import QgsMapRendererCustomPainterJob, QgsMapSettings
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor, QImage, QPainter

    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(layers[-1].crs())
    settings.setExtent(layers[-1].extent())
    settings.setOutputSize(QSize(width, height))
    settings.setBackgroundColor(QColor("white"))
    image = QImage(width, height, QImage.Format.Format_ARGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    job = QgsMapRendererCustomPainterJob(settings, painter)
    job.start()
    job.waitForFinished()
    painter.end()
    return image


def _legend(project, layer) -> List:
    """(text, icon) of each legend entry the layer tree shows for ``layer``, headings left out."""
    from qgis.PyQt.QtCore import Qt

    node_layer = project.layerTreeRoot().findLayer(layer.id())
    entries = []
    for node in layer.legend().createLayerTreeModelLegendNodes(node_layer):
        icon = node.data(Qt.ItemDataRole.DecorationRole)
        if hasattr(icon, "pixmap"):
            entries.append((node.data(0), icon))
    return entries


def main(output: Path) -> Path:
    _plugin_on_path()
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer

    app = QgsApplication([], True)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    import modalseg
    import processing

    plugin = modalseg.classFactory(None)
    plugin.initProcessing()
    from qgis.PyQt.QtCore import QRect, Qt
    from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter

    work = Path(tempfile.mkdtemp(prefix="modalseg-figure-run-"))
    processing.runAndLoadResults("modalseg:segment", {
        "OPTICAL": f"{DEMO}_rgb.tif", "ELEVATION": f"{DEMO}_dsm.tif", "ELEVATION_TYPE": 1, "DTM": f"{DEMO}_dtm.tif",
        "OUTPUT": str(work / "classes.tif"), "ROBUSTNESS": str(work / "robustness.tif"),
        "DOMINANT": str(work / "dominant.tif")})
    project = QgsProject.instance()
    loaded = {Path(layer.source()).name: layer for layer in project.mapLayers().values()}
    classes, robustness, leads = loaded["classes.tif"], loaded["robustness.tif"], loaded["dominant.tif"]
    ortho = QgsRasterLayer(f"{DEMO}_rgb.tif", "orthophoto")
    width, height = ortho.width() * SCALE, ortho.height() * SCALE
    panels = [("Orthophoto (IGN - LiDAR HD)", _render([ortho], width, height), []),
              ("Classes (default model)", _render([classes], width, height), _legend(project, classes)),
              ("Share of each input", _render([robustness, classes], width, height), _legend(project, robustness)),
              ("Dominant input", _render([leads, classes], width, height), _legend(project, leads))]
    lines = max(len(legend) for _, _, legend in panels)
    figure = QImage(width * len(panels), height + TITLE_HEIGHT + LEGEND_LINE * lines + 8, QImage.Format.Format_ARGB32)
    figure.fill(QColor("white"))
    painter = QPainter(figure)
    font = QFont("DejaVu Sans")
    font.setPixelSize(15)
    painter.setFont(font)
    painter.setPen(QColor("#222222"))
    for index, (title, image, legend) in enumerate(panels):
        painter.drawText(QRect(index * width, 0, width, TITLE_HEIGHT), Qt.AlignmentFlag.AlignCenter, title)
        painter.drawImage(index * width, TITLE_HEIGHT, image)
        font.setPixelSize(12)
        painter.setFont(font)
        for line, (text, icon) in enumerate(legend):
            top = height + TITLE_HEIGHT + 4 + line * LEGEND_LINE
            painter.drawPixmap(index * width + 6, top + 1, icon.pixmap(14, 14))
            painter.drawText(QRect(index * width + 26, top, width - 30, LEGEND_LINE),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, text)
        font.setPixelSize(15)
        painter.setFont(font)
    painter.end()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.save(str(output))
    print(f"wrote {output} ({figure.width()} x {figure.height()} px); layers: "
          + " / ".join(node.layer().name() for node in project.layerTreeRoot().findLayers()))
    del classes, robustness, leads, ortho, loaded, panels
    project.removeAllMapLayers()
    plugin.unload()
    app.exitQgis()
    return output


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT)
