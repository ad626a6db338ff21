"""Fixtures of the engine tests that run the default bundled package on real LiDAR HD tiles."""
from pathlib import Path

import pytest

from modalseg.engine import load_package
from tests.fixtures.paths import REPO_ROOT

DEFAULT_PACKAGE = REPO_ROOT / "resources" / "models" / "modalseg-sgma-urban"


@pytest.fixture(scope="module")
def package():
    """The bundled package segment picks by default (loaded once per module)."""
    return load_package(DEFAULT_PACKAGE)


@pytest.fixture(scope="module")
def houses(shared_data) -> dict:
    """The shared houses tile: RGB, DSM, DTM, nDSM and labels, by part name."""
    stem = shared_data / "lidarhd_houses" / "lidarprod_870000_6618000"
    return {part: Path(f"{stem}_{part}.tif") for part in ("rgb", "dsm", "dtm", "ndsm", "label")}
