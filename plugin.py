"""The plugin object QGIS creates through ``classFactory``: it sits above both the Processing
provider and the dialogs (``ui/``), which it registers; neither imports it."""
from qgis.core import QgsApplication

from .processing_provider.provider import ModalSegProvider


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
        from .ui.dependencies_dialog import add_menu_actions  # Plugins > ModalSeg: Dependencies, Diagnostics

        self.environment_actions = add_menu_actions(self.iface, self.iface.mainWindow())
        from .ui.finetune_dialog import add_menu_action  # Plugins > ModalSeg > Fine-tune, and a toolbar button

        self.finetune_action = add_menu_action(self.iface)

    def unload(self) -> None:
        if getattr(self, "finetune_action", None) is not None:
            from .ui.finetune_dialog import remove_menu_action

            remove_menu_action(self.iface, self.finetune_action)
            self.finetune_action = None
        if getattr(self, "environment_actions", None):
            from .ui.dependencies_dialog import remove_menu_actions

            remove_menu_actions(self.iface, self.environment_actions)
            self.environment_actions = []
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
