"""The plugin object QGIS creates through ``classFactory``."""
from qgis.core import QgsApplication

from .provider import ModalSegProvider


class ModalSegPlugin:
    """Registers the Processing provider; works with and without the QGIS GUI."""

    def __init__(self, iface) -> None:
        self.iface = iface  # None under qgis_process
        self.provider = None

    def initProcessing(self) -> None:  # noqa: N802 - QGIS API name
        """Called by QGIS (GUI and qgis_process) for plugins with hasProcessingProvider=yes."""
        if self.provider is None:
            self.provider = ModalSegProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS API name
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
