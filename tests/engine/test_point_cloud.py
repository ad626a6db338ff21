"""``engine.point_cloud``: real LiDAR HD clouds against the shared rasters made from them, alignment
to a reference raster (also in another CRS), heights in feet, windows, and every bad input."""
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr

from modalseg.engine import Cancelled, EngineError
from modalseg.engine.package import read_sidecar_metadata
from modalseg.engine.point_cloud import RasterizeOptions, RasterOutputs, parse_rows, rasterize_point_cloud
from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.point_clouds import flat_scene, lambert93_wkt, write_las

pytest.importorskip("laspy")
CLASSES = read_sidecar_metadata(REPO_ROOT / "resources" / "models" / "modalseg-sgma-urban"
                                / "modalseg-sgma-urban.onnx").classes
SHARED_PAIRS = {"fields": ("lidarhd_fields_ebb.laz", "lidarhd_fields", "ebb"),
                "houses": ("lidarhd_houses_870000_6618000.laz", "lidarhd_houses", "lidarprod_870000_6618000")}
KINDS = ("dsm", "dtm", "ndsm", "optical", "nir", "labels")


def all_outputs(folder: Path, kinds=KINDS) -> RasterOutputs:
    folder.mkdir(parents=True, exist_ok=True)
    return RasterOutputs(**{kind: str(folder / f"{kind}.tif") for kind in kinds})


def read(path: str):
    ds = gdal.Open(path)
    data = ds.ReadAsArray()
    info = (ds.RasterXSize, ds.RasterYSize, ds.GetGeoTransform(), osr.SpatialReference(wkt=ds.GetProjection()))
    ds = None
    return data, info


def run(clouds, outputs, lines=None, **options):
    log = (lines.append if lines is not None else (lambda text: None))
    return rasterize_point_cloud([str(c) for c in clouds], outputs, CLASSES, RasterizeOptions(**options), log=log)


@pytest.mark.parametrize("name", sorted(SHARED_PAIRS))
def test_shared_clouds_match_the_shared_rasters(shared_data, tmp_path, name):
    cloud, folder, stem = SHARED_PAIRS[name]
    lines = []
    report = run([shared_data / "point_clouds" / cloud], all_outputs(tmp_path), lines)
    labels, grid = read(report.outputs["labels"])
    reference, reference_grid = read(str(shared_data / folder / f"{stem}_label.tif"))
    assert grid[:2] == reference_grid[:2] and np.allclose(grid[2], reference_grid[2]) and grid[3].IsSame(reference_grid[3])
    both = (labels != 0) & (reference != 0)
    agreement = float(np.mean(labels[both] == reference[both]))
    dsm, _ = read(report.outputs["dsm"])
    reference_dsm, _ = read(str(shared_data / folder / f"{stem}_dsm.tif"))
    valid = (dsm != -9999) & (reference_dsm != -9999)
    median = float(np.median(np.abs(dsm[valid] - reference_dsm[valid])))
    print(f"\n{name}: labels agree on {100 * agreement:.2f} % of {both.sum()} pixels labelled in both; "
          f"DSM median error {median:.4f} m")
    assert agreement >= 0.98 and both.sum() > 0.3 * labels.size
    assert median <= 0.05
    assert np.array_equal(dsm == -9999, reference_dsm == -9999)  # the same 2-pixel nodata rule
    ndsm, _ = read(report.outputs["ndsm"])
    assert ndsm[ndsm != -9999].min() >= 0
    labels_ds = gdal.Open(report.outputs["labels"])
    labels_ds.GetProjection()  # GDAL's GeoTIFF driver loads the .aux.xml sidecar (category names) lazily
    band = labels_ds.GetRasterBand(1)
    assert band.GetCategoryNames()[2] == "building" and band.GetColorTable() is not None
    band = labels_ds = None
    assert any(line.startswith("Points per LAS class: 1 unclassified -> ignore") for line in lines), lines
    if name == "houses":  # IGN production codes 208/214 are no class of the mapping: listed
        assert "Warning: LAS class codes that the class mapping does not name are left unlabelled: 208 (468 points), " \
               "214 (10 points)" in lines
        assert "nir" not in report.outputs and any("NIR values of zero" in line for line in lines)
        assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # the skipped NIR left nothing
    else:
        optical, _ = read(report.outputs["optical"])
        reference_rgb, _ = read(str(shared_data / folder / f"{stem}_rgb.tif"))
        assert np.mean(optical == reference_rgb) > 0.999


def test_outputs_take_the_exact_grid_of_the_bd_ortho_tile(shared_data, tmp_path):
    clouds = shared_data / "point_clouds"
    ortho = clouds / "bdortho_pacasam_792000_6272000_left_rgb_north.tif"
    lines = []
    report = run([clouds / "lidarhd_pacasam_792000_6272000_left.laz"], all_outputs(tmp_path), lines, reference=str(ortho))
    _, ortho_grid = read(str(ortho))
    for kind in ("dsm", "dtm", "ndsm", "labels"):
        _, grid = read(report.outputs[kind])
        assert grid[:3] == ortho_grid[:3] and grid[3].IsSame(ortho_grid[3]), kind
    assert "optical" not in report.outputs and "nir" not in report.outputs  # this cloud has no colours
    assert any("no point cloud has RGB colours" in line for line in lines)
    labels, _ = read(report.outputs["labels"])
    assert {1, 2} <= set(np.unique(labels).tolist())


def test_reference_in_another_crs_matches_a_warp_of_the_native_result(shared_data, tmp_path):
    cloud = shared_data / "point_clouds" / SHARED_PAIRS["houses"][0]
    native = run([cloud], all_outputs(tmp_path / "native", ("dsm", "labels")))
    reference = str(tmp_path / "grid_3857.tif")
    gdal.Warp(reference, native.outputs["dsm"], dstSRS="EPSG:3857", xRes=0.7, yRes=0.7, resampleAlg="near")
    direct = run([cloud], all_outputs(tmp_path / "direct", ("dsm", "labels")), reference=reference)
    for kind, tolerance in (("dsm", 0.3), ("labels", None)):
        warped = str(tmp_path / f"warped_{kind}.tif")
        gdal.Warp(warped, native.outputs[kind], dstSRS="EPSG:3857", xRes=0.7, yRes=0.7, resampleAlg="near",
                  outputBounds=native_bounds(reference), targetAlignedPixels=False)
        a, grid_a = read(direct.outputs[kind])
        b, grid_b = read(warped)
        assert grid_a[:3] == read(reference)[1][:3]
        assert a.shape == b.shape
        nodata = -9999 if kind == "dsm" else 0
        both = (a != nodata) & (b != nodata)
        assert both.sum() > 0.75 * max(np.sum(a != nodata), np.sum(b != nodata))  # unlabelled vegetation: ragged edges
        if tolerance:
            assert np.median(np.abs(a[both] - b[both])) < tolerance
        else:
            assert np.mean(a[both] == b[both]) > 0.95


def native_bounds(path: str):
    ds = gdal.Open(path)
    x0, px, _, y0, _, py = ds.GetGeoTransform()
    bounds = (x0, y0 + py * ds.RasterYSize, x0 + px * ds.RasterXSize, y0)
    ds = None
    return bounds


def test_feet_cloud_heights_follow_the_target_unit(shared_data, tmp_path):
    cloud = shared_data / "point_clouds" / "autzen_trim.laz"
    lines = []
    feet = run([cloud], all_outputs(tmp_path / "feet", ("dsm",)), lines, pixel_size_m=2.0)
    assert any("heights in foot (0.3048 m; assumed equal to the horizontal unit" in line and
               "output heights in foot" in line for line in lines), lines
    dsm_ft, grid = read(feet.outputs["dsm"])
    assert grid[2][1] == pytest.approx(2.0 / 0.3048)  # 2 m pixels in feet
    utm = osr.SpatialReference()
    utm.ImportFromEPSG(32610)
    lines.clear()
    metres = run([cloud], all_outputs(tmp_path / "metres", ("dsm",)), lines, pixel_size_m=2.0,
                 target_crs_wkt=utm.ExportToWkt())
    assert any("converted to metre" in line and "output heights in metre" in line for line in lines), lines
    dsm_m, grid_m = read(metres.outputs["dsm"])
    assert grid_m[2][1] == pytest.approx(2.0)
    assert dsm_ft[dsm_ft != -9999].max() == pytest.approx(520.51, abs=0.01)
    assert dsm_m[dsm_m != -9999].max() == pytest.approx(520.51 * 0.3048, abs=0.01)


def test_windows_give_the_same_rasters_as_one_pass(shared_data, tmp_path):
    cloud = shared_data / "point_clouds" / SHARED_PAIRS["fields"][0]
    whole = run([cloud], all_outputs(tmp_path / "whole", ("dsm", "dtm", "labels", "optical")))
    lines = []
    windowed = run([cloud], all_outputs(tmp_path / "windows", ("dsm", "dtm", "labels", "optical")), lines,
                   window_cells=200, chunk_size=100_000)
    assert windowed.windows == 16 and any("processed in 16 windows" in line for line in lines)
    for kind in ("dsm", "labels", "optical"):
        assert np.array_equal(read(whole.outputs[kind])[0], read(windowed.outputs[kind])[0]), kind
    dtm_a, dtm_b = read(whole.outputs["dtm"])[0], read(windowed.outputs["dtm"])[0]
    assert np.array_equal(dtm_a == -9999, dtm_b == -9999)
    assert np.percentile(np.abs(dtm_a - dtm_b), 99) < 0.05


def test_dtm_is_interpolated_under_a_building_and_mapping_is_editable(tmp_path):
    cloud = flat_scene(tmp_path / "scene.las")
    report = run([cloud], all_outputs(tmp_path / "out", ("dsm", "dtm", "ndsm", "labels")), pixel_size_m=1.0)
    dtm, _ = read(report.outputs["dtm"])
    ndsm, _ = read(report.outputs["ndsm"])
    labels, _ = read(report.outputs["labels"])
    assert np.allclose(dtm[dtm != -9999], 100.0)  # no ground point under the building: interpolated
    assert ndsm[10, 10] == pytest.approx(4.0) and ndsm[1, 1] == pytest.approx(0.0)
    assert labels[10, 10] == 2 and labels[1, 1] == 1
    edited = run([cloud], all_outputs(tmp_path / "edited", ("labels",)), pixel_size_m=1.0,
                 class_rows=parse_rows(["2", "ground", "6", "6"]))
    assert read(edited.outputs["labels"])[0][10, 10] == 6  # 'other' by value
    with pytest.raises(EngineError, match="'x' is not a LAS class code"):
        parse_rows(["x", "ground"])


def outputs_left(folder: Path):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_bad_inputs_say_what_is_wrong_and_leave_nothing(shared_data, tmp_path):
    out = tmp_path / "out"
    not_las = tmp_path / "notes.laz"
    not_las.write_text("not a point cloud")
    with pytest.raises(EngineError, match="'.*notes.laz' is not a readable LAS/LAZ point cloud"):
        run([not_las], all_outputs(out))
    unclassified = flat_scene(tmp_path / "unclassified.las", codes=np.ones(6400, np.uint8))
    with pytest.raises(EngineError, match="has no classification .every point is class 0 or 1"):
        run([unclassified], all_outputs(out))
    assert run([unclassified], all_outputs(tmp_path / "dsm_only", ("dsm",))).outputs["dsm"]  # heights need no classes
    ortho = shared_data / "point_clouds" / "bdortho_pacasam_792000_6272000_left_rgb_north.tif"
    with pytest.raises(EngineError, match="can fall inside the reference raster"):
        run([shared_data / "point_clouds" / SHARED_PAIRS["houses"][0]], all_outputs(out), reference=str(ortho))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EngineError, match="folder '.*empty' holds no .las or .laz file"):
        run([empty], all_outputs(out))
    no_crs = flat_scene(tmp_path / "no_crs.las", crs_wkt="")
    with pytest.raises(EngineError, match="has no coordinate system in its header"):
        run([no_crs], all_outputs(out))
    assert outputs_left(out) == []
    stated = osr.SpatialReference()
    stated.ImportFromEPSG(2154)
    lines = []
    fixed = run([no_crs], all_outputs(tmp_path / "stated", ("dsm",)), lines, source_crs_wkt=stated.ExportToWkt())
    assert Path(fixed.outputs["dsm"]).is_file() and any("(stated by the user)" in line for line in lines)


def test_cancel_leaves_nothing(tmp_path):
    cloud = flat_scene(tmp_path / "scene.las")
    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        rasterize_point_cloud([str(cloud)], all_outputs(out), CLASSES, log=lambda text: None,
                              is_cancelled=lambda: True)
    assert outputs_left(out) == []


def test_a_folder_of_tiles_is_one_mosaic(tmp_path):
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    cols, rows = np.meshgrid(np.arange(10), np.arange(10))
    for i in range(2):  # two 10 m x 10 m tiles side by side, one point per 1 m cell centre, 50 m and 51 m high
        x = 700000.5 + 10 * i + cols.ravel()
        y = 6600000.5 + rows.ravel()
        write_las(tiles / f"tile_{i}.laz", x, y, np.full(x.size, 50.0 + i), np.full(x.size, 2), lambert93_wkt())
    report = run([tiles], all_outputs(tmp_path / "out", ("dsm",)), pixel_size_m=1.0)
    dsm, grid = read(report.outputs["dsm"])
    assert grid[:3] == (20, 10, (700000.0, 1.0, 0.0, 6600010.0, 0.0, -1.0))
    assert np.all(dsm[:, :10] == 50.0) and np.all(dsm[:, 10:] == 51.0)
    assert report.points_read == 200


def test_crs_and_height_unit_from_geotiff_keys(tmp_path):
    """A LAS 1.2 cloud naming its CRS by EPSG code in GeoTIFF keys, heights in feet (VerticalUnitsGeoKey)."""
    import laspy
    from laspy.vlrs.known import GeoKeyDirectoryVlr, GeoKeyEntryStruct, GeoKeysHeaderStructs

    keys = GeoKeyDirectoryVlr()
    keys.geo_keys_header = GeoKeysHeaderStructs()
    keys.geo_keys_header.number_of_keys = 3
    keys.geo_keys = [GeoKeyEntryStruct(1024, 0, 1, 1), GeoKeyEntryStruct(3072, 0, 1, 2154),
                     GeoKeyEntryStruct(4099, 0, 1, 9002)]
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.vlrs.append(keys)
    cloud = laspy.LasData(header)
    cloud.x = np.array([700000.5, 700001.5, 700002.5])
    cloud.y = np.full(3, 6600000.5)
    cloud.z = np.array([100.0, 200.0, 300.0])
    cloud.classification = np.full(3, 2, np.uint8)
    cloud.write(str(tmp_path / "keys.las"))
    lines = []
    report = run([tmp_path / "keys.las"], all_outputs(tmp_path / "out", ("dsm",)), lines, pixel_size_m=1.0)
    assert any("(GeoTIFF keys (EPSG:2154))" in line and "heights in foot (0.3048 m; the header's vertical units key)"
               in line and "converted to metre" in line for line in lines), lines
    dsm, grid = read(report.outputs["dsm"])
    assert grid[3].GetAuthorityCode(None) == "2154"
    assert np.allclose(dsm[0], [30.48, 60.96, 91.44], atol=1e-3)
