"""A DSM without a DTM: Auto tells DSM from nDSM by the values, the DTM is estimated (tiling-free),
the run warns and keeps nothing of its scratch DTM. Real LiDAR HD tiles of ../shared/data."""
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from modalseg.engine import (Cancelled, EngineError, GridRequest, LayerInput, OutputPaths, RunOptions,
                             bind_modalities, run_segmentation)
from modalseg.engine import ground
from modalseg.engine.grid import grid_of


def _array(path) -> np.ndarray:
    return gdal.Open(str(path)).ReadAsArray()


def _segment(package, layers, out: Path, **options):
    sources, messages = bind_modalities(package.metadata, layers)
    out.mkdir(parents=True, exist_ok=True)
    log = []
    report = run_segmentation(sources, package, GridRequest(),
                              OutputPaths(classes=str(out / "classes.tif"), robustness=str(out / "robustness.tif")),
                              RunOptions(**options), log=log.append)
    return report, messages, log, _array(report.outputs["classes"])


def test_auto_binds_a_dsm_alone_as_dsm_and_estimates_its_dtm(package, houses, tmp_path):
    report, messages, log, classes = _segment(package, {"elevation": LayerInput(str(houses["dsm"]))},
                                              tmp_path / "alone")
    decided = [m for m in messages if m.startswith("elevation type (auto)")]
    assert decided == [f"elevation type (auto): '{houses['dsm']}' is taken as a DSM because its lowest heights "
                       "(1st percentile 179.4 m) sit far above 0 m, where heights above ground lie on every ground "
                       "pixel"]
    assert any("minus a DTM estimated from it (ground filter) = nDSM" in m for m in messages)
    assert any(w.startswith(f"no DTM was given for the DSM '{houses['dsm']}': the DTM was estimated from the DSM "
                            "by a ground filter (40 m window)") for w in report.warnings)
    # Against the run with the LiDAR DTM, on the labelled pixels (ground and buildings).
    _, _, _, reference = _segment(package, {"elevation": LayerInput(str(houses["dsm"])),
                                            "dtm": LayerInput(str(houses["dtm"]))}, tmp_path / "with_dtm")
    labels = _array(houses["label"])
    labelled = labels > 0
    assert np.mean(classes[labelled] == reference[labelled]) > 0.97
    assert np.mean(classes[labelled] == labels[labelled]) > 0.95
    # Only the outputs are left: the scratch DTM is gone.
    assert sorted(p.name for p in (tmp_path / "alone").iterdir()) == ["classes.tif", "classes.tif.aux.xml",
                                                                      "robustness.tif"]


def test_explicit_dsm_without_dtm_runs_instead_of_stopping(package, houses, tmp_path):
    report, _, _, classes = _segment(package, {"elevation": LayerInput(str(houses["dsm"]), elevation_type="dsm")},
                                     tmp_path)
    assert any("ground filter" in w for w in report.warnings)
    assert report.class_counts[2] > 0.1 * classes.size  # the houses are found


def test_auto_keeps_an_ndsm_an_ndsm(package, houses):
    sources, messages = bind_modalities(package.metadata, {"elevation": LayerInput(str(houses["ndsm"]))})
    assert not sources[0].estimate_ground and not sources[0].subtract_path
    assert [m for m in messages if m.startswith("elevation type (auto)")] == [
        f"elevation type (auto): '{houses['ndsm']}' is taken as an nDSM because its lowest heights "
        "(1st percentile 0.00 m) sit at 0 m, as heights above ground do"]


def test_auto_takes_a_dsm_at_sea_level_with_heights_below_zero_as_dsm(shared_data):
    dsm = shared_data / "lidarhd_elevation" / "ignplugin_mnx_corse_dsm.tif"
    kind, reason = ground.elevation_kind_from_values(str(dsm))
    assert kind == "dsm"
    assert reason.endswith("of its heights are below 0 m, which heights above ground never are")


def test_every_lidar_dsm_is_told_from_its_ndsm(shared_data):
    dsms = sorted(shared_data.glob("lidarhd_*/*_dsm.tif"))
    assert len(dsms) >= 10
    for dsm in dsms:
        assert ground.elevation_kind_from_values(str(dsm))[0] == "dsm", dsm.name
        assert ground.elevation_kind_from_values(str(dsm).replace("_dsm", "_ndsm"))[0] == "ndsm", dsm.name


def test_estimated_ndsm_is_close_on_the_ground(houses, tmp_path):
    dtm = ground.estimate_dtm(str(houses["dsm"]), 1, grid_of(str(houses["dsm"])), 40.0, str(tmp_path / "dtm.tif"))
    estimated = np.maximum(_array(houses["dsm"]) - _array(dtm), 0.0)
    truth, labels = _array(houses["ndsm"]), _array(houses["label"])
    on_ground = labels == 1
    assert np.median(np.abs(estimated[on_ground] - truth[on_ground])) < 0.05
    on_buildings = labels == 2
    assert np.median(np.abs(estimated[on_buildings] - truth[on_buildings])) < 0.5


def test_estimated_dtm_does_not_depend_on_blocks_or_extent(shared_data, tmp_path, monkeypatch):
    dsm = str(shared_data / "lidarhd_fields" / "ebb_dsm.tif")
    whole = _array(ground.estimate_dtm(dsm, 1, grid_of(dsm), 30.0, str(tmp_path / "whole.tif")))
    monkeypatch.setattr(ground, "_BLOCK", 100)  # 8 x 8 blocks with their halos
    blocked = _array(ground.estimate_dtm(dsm, 1, grid_of(dsm), 30.0, str(tmp_path / "blocked.tif")))
    np.testing.assert_array_equal(whole, blocked)
    # A sub-extent holds the same values as the same pixels of the whole estimate.
    full = grid_of(dsm)
    x0, px, _, y0, _, py = full.geotransform
    part = type(full)(full.crs_wkt, (x0 + 300 * px, px, 0.0, y0 + 200 * py, 0.0, py), 150, 120)
    sub = gdal.Open(ground.estimate_dtm(dsm, 1, part, 30.0, str(tmp_path / "part.tif")))
    col = round((sub.GetGeoTransform()[0] - x0) / px)
    row = round((sub.GetGeoTransform()[3] - y0) / py)
    np.testing.assert_array_equal(sub.ReadAsArray(), whole[row:row + sub.RasterYSize, col:col + sub.RasterXSize])


def test_cancel_during_the_ground_filter_leaves_nothing(package, houses, tmp_path):
    sources, _ = bind_modalities(package.metadata, {"elevation": LayerInput(str(houses["dsm"]))})
    with pytest.raises(Cancelled):
        run_segmentation(sources, package, GridRequest(), OutputPaths(classes=str(tmp_path / "classes.tif")),
                         is_cancelled=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_removes_the_scratch_dtm(package, houses, tmp_path):
    sources, _ = bind_modalities(package.metadata, {"elevation": LayerInput(str(houses["dsm"]))})
    with pytest.raises(EngineError, match="must be a GeoTIFF"):  # fails after the DTM was estimated
        run_segmentation(sources, package, GridRequest(), OutputPaths(classes=str(tmp_path / "classes.png")))
    assert list(tmp_path.iterdir()) == []


def test_the_ground_window_must_be_positive(package, houses, tmp_path):
    sources, _ = bind_modalities(package.metadata, {"elevation": LayerInput(str(houses["dsm"]))})
    with pytest.raises(EngineError, match="the ground filter window must be a positive distance in metres"):
        run_segmentation(sources, package, GridRequest(), OutputPaths(classes=str(tmp_path / "classes.tif")),
                         RunOptions(ground_window_m=0.0))
    assert list(tmp_path.iterdir()) == []
