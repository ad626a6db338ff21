"""Where the checkout is, and ``import modalseg`` from it whatever its folder is called; GDAL-free,
so benchmarks that run where GDAL is missing (``benchmarks/cuda.py`` on a GPU machine) can use it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def expose_plugin_package() -> None:
    """Make ``import modalseg`` work from a checkout with any folder name."""
    link_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "modalseg-bench-path"
    link_dir.mkdir(exist_ok=True)
    link = link_dir / "modalseg"
    if not link.exists():
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    sys.path.insert(0, str(link_dir))
