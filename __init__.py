"""ModalSeg: multimodal semantic segmentation of remote-sensing rasters, as a QGIS plugin.

This module stays free of ``qgis`` imports at import time so that the QGIS-free parts
(``modalseg.engine``, ``modalseg.models``) can be imported from a plain Python process; QGIS
calls :func:`classFactory`, which imports the QGIS side lazily.
"""


def classFactory(iface):  # noqa: N802 - name fixed by the QGIS plugin contract
    """Entry point QGIS calls when it loads the plugin (``iface`` is None under qgis_process)."""
    # First of all: packages installed by "Install dependencies" live in a folder of the QGIS
    # profile that must be on sys.path before anything tries to import them.
    from .processing_provider.dependencies import activate_local_packages

    activate_local_packages()
    from .plugin import ModalSegPlugin

    return ModalSegPlugin(iface)
