"""Where the shared sample data are: the one definition for training, tests and benchmarks.

``../shared/data`` beside the checkout (real LiDAR HD and other samples; CI has it, a user's
clone may not), or the folder named by ``MODALSEG_SHARED_DATA`` when that is set. Only a path:
callers check that it exists and say so when it does not.
"""
from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA_ENV = "MODALSEG_SHARED_DATA"
PLUGIN_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get(SHARED_DATA_ENV) or PLUGIN_ROOT.parent / "shared" / "data")
