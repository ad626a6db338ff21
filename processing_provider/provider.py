"""The ``modalseg`` Processing provider."""
from typing import List

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .paths import ICON_PATH, SVG_ICON_PATH


class ModalSegProvider(QgsProcessingProvider):
    """Holds ModalSeg's algorithms; id ``modalseg`` (so ``modalseg:segment``)."""

    def id(self) -> str:
        return "modalseg"

    def name(self) -> str:
        return "ModalSeg"

    def longName(self) -> str:  # noqa: N802 - QGIS API name
        return "ModalSeg - multimodal semantic segmentation"

    def icon(self) -> QIcon:
        return QIcon(str(ICON_PATH))

    def svgIconPath(self) -> str:  # noqa: N802 - QGIS API name
        return str(SVG_ICON_PATH)

    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS API name
        # Imported here so that a broken algorithm module shows up as a provider load error
        # in the log rather than stopping the plugin from loading at all.
        from .algorithm_segment import SegmentAlgorithm

        self.addAlgorithm(SegmentAlgorithm())
        from .algorithm_diagnostics import DiagnosticsAlgorithm
        from .algorithm_install_dependencies import InstallDependenciesAlgorithm

        self.addAlgorithm(InstallDependenciesAlgorithm())
        self.addAlgorithm(DiagnosticsAlgorithm())
        from .algorithm_evaluate import EvaluateAlgorithm

        self.addAlgorithm(EvaluateAlgorithm())
        from .algorithm_rasterize_point_cloud import RasterizePointCloudAlgorithm

        self.addAlgorithm(RasterizePointCloudAlgorithm())
        from .algorithm_finetune import FinetuneAlgorithm

        self.addAlgorithm(FinetuneAlgorithm())
        from .algorithm_quantize import QuantizeAlgorithm

        self.addAlgorithm(QuantizeAlgorithm())

    # The engine writes GeoTIFF only; advertising just that keeps the output file dialogs honest.
    def supportedOutputRasterLayerExtensions(self) -> List[str]:  # noqa: N802 - QGIS API name
        return ["tif"]

    def defaultRasterFileExtension(self) -> str:  # noqa: N802 - QGIS API name
        return "tif"
