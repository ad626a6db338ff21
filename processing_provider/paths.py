"""Where the plugin's own files are: a leaf every QGIS-side module may import (no qgis, no imports
of ModalSeg), so the provider, the algorithms and the dialogs do not import each other for it."""
from pathlib import Path

PLUGIN_ROOT = Path(__file__).resolve().parent.parent
ICON_PATH = PLUGIN_ROOT / "icon.png"
SVG_ICON_PATH = PLUGIN_ROOT / "resources" / "icons" / "modalseg.svg"
BUNDLED_MODELS_DIR = PLUGIN_ROOT / "resources" / "models"
# The bundled package chosen by 'Automatic' on ties: the any-modality network with robustness maps,
# which also scores best on the elevation-only towns (benchmarks/accuracy).
DEFAULT_BUNDLED_MODEL = "modalseg-sgma-urban"
