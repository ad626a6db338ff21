"""engine.evaluation, .labels, .evaluation_report: hand-computed confusion matrices, erosion, rasterising,
reports (no QGIS)."""
import math

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from modalseg.engine.errors import EngineError
from modalseg.engine.evaluation import boundary_mask, evaluate_classification, evaluate_polygons, raster_classes
from modalseg.engine.evaluation_report import write_csv, write_html
from modalseg.engine.labels import LABEL_NODATA, EvalClass, rasterize_labels
from modalseg.engine.grid import grid_of

ORIGIN = (500000.0, 6600000.0)
CLASSES = [EvalClass(1, "ground"), EvalClass(2, "building"), EvalClass(3, "tree")]

# 4 x 6 rasters; the reference uses 0 as nodata
PRED = np.array([[1, 1, 2, 2, 3, 3],
                 [1, 1, 2, 2, 3, 3],
                 [1, 2, 2, 2, 3, 1],
                 [1, 1, 3, 2, 9, 3]], np.uint8)  # 9: no class -> "unclassified" column
REF = np.array([[1, 1, 2, 2, 3, 3],
                [1, 2, 2, 2, 3, 0],
                [1, 1, 2, 2, 1, 1],
                [1, 1, 2, 2, 3, 3]], np.uint8)
# by hand (rows = reference 1, 2, 3; columns = predicted 1, 2, 3, unclassified); REF 0 not scored
HAND = np.array([[7, 1, 1, 0],
                 [1, 7, 1, 0],
                 [0, 0, 4, 1],
                 [0, 0, 0, 0]])


def write_raster(path, data, nodata=None, origin=ORIGIN, gsd=1.0, epsg=2154, names=None):
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[1], data.shape[0], 1, gdal.GDT_Byte)
    ds.SetGeoTransform((origin[0], gsd, 0.0, origin[1], 0.0, -gsd))
    ds.SetProjection(srs.ExportToWkt())
    band = ds.GetRasterBand(1)
    if nodata is not None:
        band.SetNoDataValue(nodata)
    if names:
        band.SetCategoryNames(names)
    band.WriteArray(data)
    band = None  # a band outliving its dataset crashes GDAL
    ds = None
    return str(path)


def write_polygons(path, polygons, epsg=2154, field="cls", field_type=ogr.OFTInteger):
    """``polygons``: (class attribute, (xmin, ymin, xmax, ymax)) in ``epsg`` coordinates."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lyr = ds.CreateLayer("labels", srs=srs, geom_type=ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn(field, field_type))
    for value, (x0, y0, x1, y1) in polygons:
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetField(field, value)
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"))
        lyr.CreateFeature(f)
    ds = None
    return str(path)


@pytest.fixture()
def pair(tmp_path):
    names = ["", "ground", "building", "tree"]
    return (write_raster(tmp_path / "pred.tif", PRED, names=names),
            write_raster(tmp_path / "ref.tif", REF, nodata=0))


def test_hand_computed_matrix_exactly(pair):
    pred, ref = pair
    res = evaluate_classification(pred, ref, classes=raster_classes(pred))
    assert [c.name for c in res.classes] == ["ground", "building", "tree"]
    np.testing.assert_array_equal(res.matrix, HAND)
    assert res.pixels["scored"] == 23 and res.pixels["unclassified"] == 1
    s = res.summary
    assert s["oa"] == pytest.approx(18 / 23)
    # IoU = TP / (TP + FP + FN): ground 7/(7+1+2), building 7/(7+1+2), tree 4/(4+2+1)
    assert s["iou"]["ground"] == pytest.approx(7 / 10)
    assert s["iou"]["building"] == pytest.approx(7 / 10)
    assert s["iou"]["tree"] == pytest.approx(4 / 7)
    assert s["miou"] == pytest.approx((7 / 10 + 7 / 10 + 4 / 7) / 3)
    assert s["f1"]["tree"] == pytest.approx(8 / 11)
    assert s["precision"]["tree"] == pytest.approx(4 / 6) and s["recall"]["tree"] == pytest.approx(4 / 5)
    # kappa over the 4 x 4 matrix: row sums 9, 9, 5, 0; column sums 8, 8, 6, 1
    pe = (9 * 8 + 9 * 8 + 5 * 6) / 23 ** 2
    assert s["kappa"] == pytest.approx((18 / 23 - pe) / (1 - pe))


def test_ignore_value_and_unknown_class(tmp_path, pair):
    pred, _ = pair
    ref = REF.copy()
    ref[0, 0] = 7
    ref_path = write_raster(tmp_path / "ref7.tif", ref, nodata=0)
    with pytest.raises(EngineError, match=r"class value\(s\) \[7\]"):
        evaluate_classification(pred, ref_path, classes=CLASSES)
    res = evaluate_classification(pred, ref_path, classes=CLASSES, ignore_value=7)
    assert res.pixels["ignored"] == 1
    assert res.matrix[0, 0] == HAND[0, 0] - 1


def test_erosion_drops_pixels_near_class_boundaries():
    values = np.array([[1, 1, 1, 2, 2, 2]] * 3)
    valid = np.ones(values.shape, bool)
    edge = boundary_mask(values, valid, 1)
    assert edge[:, 2:4].all() and not edge[:, [0, 1, 4, 5]].any()
    valid[:, 3:] = False  # nodata is no class: no boundary
    assert not boundary_mask(values, valid, 1).any()


def test_erosion_in_evaluation(tmp_path):
    ref = np.ones((20, 20), np.uint8)
    ref[:, 10:] = 2
    pred = ref.copy()
    pred[:, 9] = 2  # error right at the boundary
    p = write_raster(tmp_path / "p.tif", pred)
    r = write_raster(tmp_path / "r.tif", ref, nodata=0)
    plain = evaluate_classification(p, r, classes=CLASSES[:2])
    assert plain.summary["oa"] < 1.0
    eroded = evaluate_classification(p, r, classes=CLASSES[:2], erosion_radius=1)
    assert eroded.summary["oa"] == 1.0 and eroded.pixels["eroded"] == 40


def test_reference_on_another_grid_is_read_nearest(tmp_path, pair):
    pred, _ = pair
    fine = np.repeat(np.repeat(REF, 2, 0), 2, 1)  # same area at half the pixel size
    r = write_raster(tmp_path / "fine.tif", fine, nodata=0, gsd=0.5)
    res = evaluate_classification(pred, r, classes=CLASSES)
    np.testing.assert_array_equal(res.matrix, HAND)


def test_no_overlap_and_empty_labels(tmp_path, pair):
    pred, _ = pair
    far = write_raster(tmp_path / "far.tif", REF, nodata=0, origin=(600000.0, 6600000.0))
    with pytest.raises(EngineError, match="do not overlap"):
        evaluate_classification(pred, far, classes=CLASSES)
    empty = write_raster(tmp_path / "empty.tif", np.zeros_like(REF), nodata=0)
    with pytest.raises(EngineError, match="no reference label"):
        evaluate_classification(pred, empty, classes=CLASSES)


def test_polygons_in_another_crs(tmp_path, pair):
    """Polygons in WGS 84 burn onto the Lambert-93 grid; the result equals cell-aligned polygons."""
    pred, _ = pair
    grid = grid_of(pred)
    x0, y0 = ORIGIN
    boxes = [(1, (x0, y0 - 4, x0 + 2, y0)), (2, (x0 + 2, y0 - 4, x0 + 4, y0)), (3, (x0 + 4, y0 - 4, x0 + 6, y0))]
    src, dst = osr.SpatialReference(), osr.SpatialReference()
    src.ImportFromEPSG(2154)
    dst.ImportFromEPSG(4326)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    t = osr.CoordinateTransformation(src, dst)
    # shrink boxes by 0.1 px so reprojection wobble cannot change which cell centres they cover
    geo = []
    for v, (a, b, c, d) in boxes:
        (lo_x, lo_y, _), (hi_x, hi_y, _) = t.TransformPoint(a + 0.1, b + 0.1), t.TransformPoint(c - 0.1, d - 0.1)
        geo.append((v, (lo_x, lo_y, hi_x, hi_y)))
    vec = write_polygons(tmp_path / "wgs84.gpkg", geo, epsg=4326)
    burnt = rasterize_labels(vec, "cls", grid, str(tmp_path / "burnt.tif"))
    data = gdal.Open(burnt.path).ReadAsArray()
    expected = np.repeat(np.array([[1, 1, 2, 2, 3, 3]], np.uint8), 4, 0)
    np.testing.assert_array_equal(data, expected)
    res = evaluate_polygons(pred, vec, "cls", str(tmp_path), classes=CLASSES)
    assert res.pixels["scored"] == 24


def test_polygon_label_errors(tmp_path, pair):
    pred, _ = pair
    grid = grid_of(pred)
    x0, y0 = ORIGIN
    names = write_polygons(tmp_path / "names.gpkg", [("Building", (x0, y0 - 2, x0 + 2, y0)),
                                                     ("pool", (x0 + 2, y0 - 2, x0 + 4, y0))],
                           field_type=ogr.OFTString)
    with pytest.raises(EngineError, match="'pool' is not a known class"):
        evaluate_polygons(pred, names, "cls", str(tmp_path), classes=CLASSES)
    outside = write_polygons(tmp_path / "out.gpkg", [(1, (x0 + 1000, y0 - 2, x0 + 1002, y0))])
    with pytest.raises(EngineError, match="outside the raster"):
        rasterize_labels(outside, "cls", grid, str(tmp_path / "o.tif"))
    empty = write_polygons(tmp_path / "empty.gpkg", [])
    with pytest.raises(EngineError, match="no features"):
        rasterize_labels(empty, "cls", grid, str(tmp_path / "e.tif"))
    with pytest.raises(EngineError, match="no field 'klass'"):
        rasterize_labels(names, "klass", grid, str(tmp_path / "k.tif"))


def test_reports(tmp_path, pair):
    pred, ref = pair
    res = evaluate_classification(pred, ref, classes=raster_classes(pred))
    write_csv(res, str(tmp_path / "r.csv"))
    text = (tmp_path / "r.csv").read_text()
    assert "ground" in text and "miou" in text
    write_html(res, str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text()
    assert "<table" in page and "building" in page
    assert math.isclose(res.rows()[0]["iou"], 0.7)
    assert LABEL_NODATA == 255
