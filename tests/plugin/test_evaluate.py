"""``modalseg:evaluate`` through QGIS Processing: exact matrix, polygons in another CRS, errors."""
import csv

import numpy as np
import pytest

from tests.engine.test_evaluation import ORIGIN, PRED, REF, write_polygons, write_raster


@pytest.fixture()
def run(qgis_app):
    import processing

    return processing.run


@pytest.fixture()
def pair(tmp_path):
    return (write_raster(tmp_path / "pred.tif", PRED, names=["", "ground", "building", "tree"]),
            write_raster(tmp_path / "ref.tif", REF, nodata=0))


def test_reproduces_hand_computed_matrix(run, pair, tmp_path):
    pred, ref = pair
    out = run("modalseg:evaluate", {"INPUT": pred, "REFERENCE": ref, "TABLE": str(tmp_path / "t.csv"),
                                    "CSV": str(tmp_path / "acc.csv"), "HTML": str(tmp_path / "acc.html")})
    assert out["OA"] == pytest.approx(18 / 23)
    assert out["MIOU"] == pytest.approx((0.7 + 0.7 + 4 / 7) / 3)
    pe = (9 * 8 + 9 * 8 + 5 * 6) / 23 ** 2
    assert out["KAPPA"] == pytest.approx((18 / 23 - pe) / (1 - pe))
    with open(out["CSV"], newline="") as f:
        lines = list(csv.reader(f))
    start = next(i for i, r in enumerate(lines) if r and r[0].startswith("reference"))
    matrix = np.array([[int(v) for v in r[1:]] for r in lines[start + 1:start + 4]])
    np.testing.assert_array_equal(matrix, [[7, 1, 1, 0], [1, 7, 1, 0], [0, 0, 4, 1]])
    with open(out["TABLE"], newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["class"] for r in table] == ["ground", "building", "tree", "mean over classes"]
    assert float(table[2]["iou"]) == pytest.approx(4 / 7) and int(table[2]["support_px"]) == 5
    with open(out["HTML"], encoding="utf-8") as f:
        page = f.read()
    assert "data:image/png;base64" in page or "<table" in page


def test_polygons_in_another_crs_ignore_and_erosion(run, pair, tmp_path):
    """Polygons in Web Mercator over the Lambert-93 raster; ignore value 3; erosion 1 px."""
    from osgeo import osr

    pred, _ = pair
    x0, y0 = ORIGIN
    src, dst = osr.SpatialReference(), osr.SpatialReference()
    src.ImportFromEPSG(2154)
    dst.ImportFromEPSG(3857)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    t = osr.CoordinateTransformation(src, dst)
    boxes = []
    for value, (a, b, c, d) in ((1, (x0, y0 - 4, x0 + 2, y0)), (2, (x0 + 2, y0 - 4, x0 + 4, y0)),
                                (3, (x0 + 4, y0 - 4, x0 + 6, y0))):
        lo, hi = t.TransformPoint(a + 0.1, b + 0.1), t.TransformPoint(c - 0.1, d - 0.1)
        boxes.append((value, (lo[0], lo[1], hi[0], hi[1])))
    vec = write_polygons(tmp_path / "merc.gpkg", boxes, epsg=3857)
    out = run("modalseg:evaluate", {"INPUT": pred, "REFERENCE_POLYGONS": vec, "CLASS_FIELD": "cls",
                                    "TABLE": "TEMPORARY_OUTPUT", "CSV": str(tmp_path / "a.csv")})
    # reference columns 1 1 2 2 3 3 against PRED: 20 of 24 right (one miss is the unclassified 9)
    assert out["OA"] == pytest.approx(20 / 24)
    ignored = run("modalseg:evaluate", {"INPUT": pred, "REFERENCE_POLYGONS": vec, "CLASS_FIELD": "cls",
                                        "IGNORE_VALUE": 3, "TABLE": "TEMPORARY_OUTPUT"})
    assert ignored["OA"] == pytest.approx(14 / 16)
    eroded = run("modalseg:evaluate", {"INPUT": pred, "REFERENCE_POLYGONS": vec, "CLASS_FIELD": "cls",
                                       "EROSION": 1, "TABLE": "TEMPORARY_OUTPUT"})
    # only columns 0 and 5 are more than 1 px from a class boundary: 7 of 8 right
    assert eroded["OA"] == pytest.approx(7 / 8)


def test_clear_errors(run, pair, tmp_path):
    from qgis.core import QgsProcessingException

    pred, _ = pair
    far = write_raster(tmp_path / "far.tif", REF, nodata=0, origin=(700000.0, 6600000.0))
    with pytest.raises(QgsProcessingException, match="do not overlap"):
        run("modalseg:evaluate", {"INPUT": pred, "REFERENCE": far, "TABLE": "TEMPORARY_OUTPUT"})
    empty = write_raster(tmp_path / "empty.tif", np.zeros_like(REF), nodata=0)
    with pytest.raises(QgsProcessingException, match="no reference label"):
        run("modalseg:evaluate", {"INPUT": pred, "REFERENCE": empty, "TABLE": "TEMPORARY_OUTPUT"})
    odd = REF.copy()
    odd[2, 2] = 8
    with pytest.raises(QgsProcessingException, match=r"class value\(s\) \[8\]"):
        run("modalseg:evaluate", {"INPUT": pred, "REFERENCE": write_raster(tmp_path / "odd.tif", odd, nodata=0),
                                  "TABLE": "TEMPORARY_OUTPUT"})
    x0, y0 = ORIGIN
    none = write_polygons(tmp_path / "none.gpkg", [])
    with pytest.raises(QgsProcessingException, match="no features"):
        run("modalseg:evaluate", {"INPUT": pred, "REFERENCE_POLYGONS": none, "CLASS_FIELD": "cls",
                                  "TABLE": "TEMPORARY_OUTPUT"})
    with pytest.raises(QgsProcessingException, match="either as a raster or as polygons"):
        run("modalseg:evaluate", {"INPUT": pred, "TABLE": "TEMPORARY_OUTPUT"})
