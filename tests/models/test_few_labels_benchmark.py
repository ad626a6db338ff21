"""benchmarks/few_labels: the seeded polygon procedure on the real held-out tiles (few, small, inside
their class, on the left half only, the same every time, readable by OGR) and its quick run."""
import json
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal, ogr

from tests.fixtures.paths import REPO_ROOT
from modalseg.engine.package import read_sidecar_metadata
from modalseg.models.held_out import held_out_areas

sys.path.insert(0, str(REPO_ROOT))
from benchmarks.few_labels import MAX_COVER, MAX_POLYGONS, SEED, draw_polygons, write_polygons  # noqa: E402

DEFAULT = REPO_ROOT / "resources" / "models" / "modalseg-sgma-urban"


@pytest.fixture(scope="module")
def areas(shared_data, tmp_path_factory):
    classes = read_sidecar_metadata(DEFAULT).classes
    return classes, held_out_areas(classes, shared_data, tmp_path_factory.mktemp("cache"), log=lambda text: None)


def test_polygons_are_few_small_inside_their_class_and_on_the_left_half(areas, tmp_path):
    classes, found = areas
    values = [c.value for c in classes]
    for area in found:
        label = gdal.Open(str(area.label)).ReadAsArray()
        blobs = draw_polygons(label, values, np.random.default_rng(SEED))
        assert np.array_equal(blobs, draw_polygons(label, values, np.random.default_rng(SEED)))  # seeded
        drawn = blobs > 0
        half = label.shape[1] // 2
        assert not drawn[:, half:].any()
        assert 0 < drawn[:, :half].mean() <= MAX_COVER
        assert np.array_equal(blobs[drawn], label[drawn])  # every polygon pixel is of its polygon's class
        polygons = write_polygons(blobs, area.label, tmp_path / f"{area.name}.gpkg")
        assert 1 <= polygons.count <= MAX_POLYGONS
        vector = ogr.Open(str(polygons.path))  # the layer must not outlive its data source
        layer = vector.GetLayer(0)
        assert layer.GetFeatureCount() == polygons.count
        assert {f.GetField("class") for f in layer} == set(polygons.classes) == set(np.unique(blobs[drawn]))
        layer = vector = None


def test_quick_run_prints_untuned_and_tuned_figures(shared_data, tmp_path):
    out = tmp_path / "few.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.few_labels", "--quick", "--json", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    (name, row), = result["areas"].items()
    assert row["subset"] == "ndsm" and 1 <= row["polygons"] <= MAX_POLYGONS and row["cover_percent"] <= 100 * MAX_COVER
    assert 0 <= row["untuned_miou"] <= 100 and 0 <= row["tuned_miou"] <= 100
    assert name in done.stdout and "elevation tiles: mean untuned" in done.stdout
    assert "seeded procedure" in result["protocol"]
