"""Render the README figure from a real run: ``modalseg:segment`` on the bundled demo tile, loaded and
styled as the plugin loads it, drawn by QGIS's own map renderer (headless) into docs/.

    .venv/bin/python scripts/readme_figure.py [output.png]

Three panels side by side: the orthophoto, the class map, and the robustness composite over the
class map (as the layers stack in QGIS), each with its title; the robustness legend names the
modality behind each colour.
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
LEGEND_HEIGHT = 26


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
        "OUTPUT": str(work / "classes.tif"), "ROBUSTNESS": str(work / "robustness.tif")})
    project = QgsProject.instance()
    loaded = {Path(layer.source()).name: layer for layer in project.mapLayers().values()}
    classes, robustness = loaded["classes.tif"], loaded["robustness.tif"]
    ortho = QgsRasterLayer(f"{DEMO}_rgb.tif", "orthophoto")
    width, height = ortho.width() * SCALE, ortho.height() * SCALE
    renderer = robustness.renderer()
    colours = [("red", renderer.redBand()), ("green", renderer.greenBand()), ("blue", renderer.blueBand())]
    legend = ", ".join(f"{colour} = {robustness.bandName(band).split(': ', 1)[-1]}"
                       for colour, band in colours if band > 0)
    panels = [("Orthophoto (IGN - LiDAR HD)", _render([ortho], width, height)),
              ("Classes (default model)", _render([classes], width, height)),
              ("Robustness over the classes", _render([robustness, classes], width, height))]
    figure = QImage(width * len(panels), height + TITLE_HEIGHT + LEGEND_HEIGHT, QImage.Format.Format_ARGB32)
    figure.fill(QColor("white"))
    painter = QPainter(figure)
    font = QFont("DejaVu Sans")
    font.setPixelSize(15)
    painter.setFont(font)
    painter.setPen(QColor("#222222"))
    for index, (title, image) in enumerate(panels):
        painter.drawText(QRect(index * width, 0, width, TITLE_HEIGHT), Qt.AlignmentFlag.AlignCenter, title)
        painter.drawImage(index * width, TITLE_HEIGHT, image)
    names = ", ".join(f"{c.label}" for c in classes.renderer().classes())
    painter.drawText(QRect(0, height + TITLE_HEIGHT, 2 * width, LEGEND_HEIGHT), Qt.AlignmentFlag.AlignCenter,
                     f"classes: {names}")
    painter.drawText(QRect(2 * width, height + TITLE_HEIGHT, width, LEGEND_HEIGHT), Qt.AlignmentFlag.AlignCenter,
                     f"share of each input: {legend}")
    painter.end()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.save(str(output))
    print(f"wrote {output} ({figure.width()} x {figure.height()} px); layers: "
          + " / ".join(node.layer().name() for node in project.layerTreeRoot().findLayers()))
    del renderer, classes, robustness, ortho, loaded
    project.removeAllMapLayers()
    plugin.unload()
    app.exitQgis()
    return output


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT)
