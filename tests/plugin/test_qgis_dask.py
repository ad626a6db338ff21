"""segment's 'Dask scheduler address' parameter through QGIS Processing, against a real cluster of
2 worker processes on loopback: the same files as without it; a bad address stops the run in one
sentence. Skipped where dask / distributed are absent."""
import numpy as np
import pytest
from osgeo import gdal

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def scheduler():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as cluster:
        yield cluster.scheduler_address


def _params(demo, model_package, folder, **extra):
    return {"OPTICAL": demo["rgb"], "ELEVATION": demo["ndsm"], "ELEVATION_TYPE": 2, "MODEL_FILE": str(model_package),
            "TILE_SIZE": 128, "OVERLAP": 32, "OUTPUT": str(folder / "classes.tif"),
            "ROBUSTNESS": str(folder / "robustness.tif"), "PROBABILITIES": str(folder / "probabilities.tif"),
            **extra}


def test_segment_on_a_dask_cluster_writes_the_same_files(qgis_app, demo, model_package, scheduler, tmp_path):
    import processing

    here = processing.run("modalseg:segment", _params(demo, model_package, tmp_path / "here"))
    cluster = processing.run("modalseg:segment", _params(demo, model_package, tmp_path / "cluster",
                                                         DASK_SCHEDULER=scheduler))
    for name in ("OUTPUT", "ROBUSTNESS", "PROBABILITIES"):
        a, b = gdal.Open(here[name]), gdal.Open(cluster[name])
        assert np.array_equal(a.ReadAsArray(), b.ReadAsArray()), name
    dataset = gdal.Open(cluster["OUTPUT"])  # a band must not outlive its dataset
    classes = dataset.GetRasterBand(1)
    assert classes.GetColorTable() is not None and "building" in classes.GetCategoryNames()
    assert sorted(p.name for p in (tmp_path / "cluster").iterdir()) == sorted(
        p.name for p in (tmp_path / "here").iterdir())


def test_a_bad_scheduler_address_stops_the_run_in_one_sentence(qgis_app, demo, model_package, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="neither local:N nor a scheduler address"):
        processing.run("modalseg:segment", _params(demo, model_package, tmp_path / "out",
                                                   DASK_SCHEDULER="scheduler-host:8786"))
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
