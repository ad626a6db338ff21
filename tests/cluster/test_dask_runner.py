"""The Dask runner on a real LocalCluster (2 worker processes on loopback): the same bits as the
single-process run, a killed worker, bad input, cancel. Skipped where dask / distributed are absent."""
import contextlib
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from modalseg.engine import (Cancelled, EngineError, GridRequest, LayerInput, OutputPaths, RunOptions,
                             bind_modalities, load_package, run_segmentation)
from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.rasters import smooth_field, write_raster

distributed = pytest.importorskip("distributed")

PACKAGE = REPO_ROOT / "resources" / "models" / "modalseg-sgma-urban"
# Small tiles and blocks so a small raster makes many tasks; one runtime thread on both paths
# (ONNX Runtime's sums depend on the thread count).
SMALL_BLOCKS = dict(tile_size=64, overlap=16, tile_rows_per_block=1, max_block_width=200, threads=1)
GT = (870000.0, 0.5, 0.0, 6618000.0, 0.0, -0.5)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as local, distributed.Client(local) as client:
        yield local.scheduler_address, client


@pytest.fixture(scope="module")
def package():
    return load_package(PACKAGE)


@pytest.fixture(scope="module")
def wide_scene(tmp_path_factory):
    """A generated RGB + nDSM pair 700 x 230 px: 4 block columns x 5 block rows of 64 px tiles."""
    folder = tmp_path_factory.mktemp("wide")
    h, w = 230, 700
    rgb = (np.stack([smooth_field((h, w), s) for s in (1, 2, 3)]) * 255).astype(np.uint8)
    ndsm = np.maximum(smooth_field((h, w), 4) * 24 - 4, 0).astype(np.float32)
    return {"optical": str(write_raster(folder / "rgb.tif", rgb, 2154, GT)),
            "ndsm": str(write_raster(folder / "ndsm.tif", ndsm, 2154, GT))}


def _houses(shared_data):
    stem = shared_data / "lidarhd_houses" / "lidarprod_870000_6618000"
    return {"optical": f"{stem}_rgb.tif", "ndsm": f"{stem}_ndsm.tif"}


def _run(package, layers, folder: Path, scheduler=None, grid=GridRequest(), **kwargs):
    folder.mkdir(parents=True, exist_ok=True)
    sources, _ = bind_modalities(package.metadata, {
        "optical": LayerInput(layers["optical"]), "elevation": LayerInput(layers["ndsm"], elevation_type="ndsm")})
    outputs = OutputPaths(str(folder / "classes.tif"), str(folder / "robustness.tif"),
                          str(folder / "probabilities.tif"), str(folder / "confidence.tif"),
                          str(folder / "dominant.tif"))
    report = run_segmentation(sources, package, grid, outputs, RunOptions(**SMALL_BLOCKS, scheduler=scheduler), **kwargs)
    return outputs, report


def _assert_identical(single: OutputPaths, parallel: OutputPaths) -> None:
    for (name, a), (_, b) in zip(single.named(), parallel.named()):
        da, db = gdal.Open(a), gdal.Open(b)
        assert (da.RasterXSize, da.RasterYSize, da.RasterCount) == (db.RasterXSize, db.RasterYSize, db.RasterCount)
        assert da.GetGeoTransform() == db.GetGeoTransform() and da.GetProjection() == db.GetProjection()
        assert np.array_equal(da.ReadAsArray(), db.ReadAsArray()), f"{name} differs"
        for i in range(1, da.RasterCount + 1):
            ba, bb = da.GetRasterBand(i), db.GetRasterBand(i)
            assert (ba.GetDescription(), ba.GetNoDataValue()) == (bb.GetDescription(), bb.GetNoDataValue())
        if name in ("classes", "dominant modality"):
            ba, bb = da.GetRasterBand(1), db.GetRasterBand(1)
            assert ba.GetCategoryNames() == bb.GetCategoryNames() and len(set(bb.GetCategoryNames())) > 2
            table_a, table_b = ba.GetColorTable(), bb.GetColorTable()
            assert [table_a.GetColorEntry(v) for v in range(8)] == [table_b.GetColorEntry(v) for v in range(8)]


def _leftovers(folder: Path):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_real_houses_tile_is_bit_identical(package, shared_data, tmp_path, cluster):
    """A LocalCluster of its own (local:2) against the single-process run on the shared LiDAR HD tile."""
    single, single_report = _run(package, _houses(shared_data), tmp_path / "single")
    parallel, report = _run(package, _houses(shared_data), tmp_path / "dask", "local:2")
    _assert_identical(single, parallel)
    assert report.class_counts == single_report.class_counts and report.class_counts[2] > 1000  # buildings
    assert _leftovers(tmp_path / "dask") == []


def test_wide_generated_raster_is_bit_identical_over_many_blocks(package, wide_scene, tmp_path, cluster):
    address, client = cluster
    single, single_report = _run(package, wide_scene, tmp_path / "single")
    lines = []
    parallel, report = _run(package, wide_scene, tmp_path / "dask", address, log=lines.append)
    _assert_identical(single, parallel)
    assert report.class_counts == single_report.class_counts
    assert any("20 blocks as tasks on 2 worker(s)" in line for line in lines), lines
    assert _leftovers(tmp_path / "dask") == []


def test_a_job_beside_another_current_client_runs_on_its_own_client(package, wide_scene, tmp_path, cluster):
    """A user's own client set as current in this process (the QGIS Python console, a notebook) must not
    carry the job's waiting: it waits on the job's client (local:2 here) and gives the same bits."""
    _, client = cluster
    single, _ = _run(package, wide_scene, tmp_path / "single")
    with client.as_current():
        parallel, _ = _run(package, wide_scene, tmp_path / "dask", "local:2")
    _assert_identical(single, parallel)
    assert _leftovers(tmp_path / "dask") == []


def test_a_worker_killed_mid_job_is_replaced_and_the_output_is_identical(package, wide_scene, tmp_path, cluster):
    address, client = cluster
    single, _ = _run(package, wide_scene, tmp_path / "single")
    victim = sorted(client.run(os.getpid).values())[0]
    killed = []

    def kill_once(fraction, text):
        if not killed and fraction > 0:  # after the first finished block: the others are queued or running
            os.kill(victim, signal.SIGKILL)
            killed.append(fraction)

    parallel, _ = _run(package, wide_scene, tmp_path / "dask", address, progress=kill_once)
    assert killed and killed[0] < 1.0
    assert victim not in client.run(os.getpid).values() or len(client.run(os.getpid)) < 2
    _assert_identical(single, parallel)
    assert _leftovers(tmp_path / "dask") == []


def test_bad_input_fails_before_any_task_runs_with_the_single_process_message(package, wide_scene, tmp_path,
                                                                                cluster):
    address, client = cluster
    transitions = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    layers = dict(wide_scene, ndsm=wide_scene["optical"])  # an output that is an input comes below
    messages = []
    for scheduler in (None, address):
        sources, _ = bind_modalities(package.metadata, {"optical": LayerInput(layers["optical"])})
        with pytest.raises(EngineError) as failure:
            run_segmentation(sources, package, GridRequest(), OutputPaths(layers["optical"]),
                             RunOptions(**SMALL_BLOCKS, scheduler=scheduler))
        messages.append(str(failure.value))
    assert messages[0] == messages[1] and "would destroy that input" in messages[0]
    sources, _ = bind_modalities(package.metadata, {"optical": LayerInput(layers["optical"])})
    with pytest.raises(EngineError, match="neither local:N nor a scheduler address"):
        run_segmentation(sources, package, GridRequest(), OutputPaths(str(tmp_path / "c.tif")),
                         RunOptions(scheduler="tpc://nowhere"))
    assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter) == transitions
    assert list(tmp_path.iterdir()) == []


def test_cancel_leaves_nothing(package, wide_scene, tmp_path, cluster):
    address, _ = cluster
    asked = []
    with pytest.raises(Cancelled):
        _run(package, wide_scene, tmp_path / "dask", address, progress=lambda f, t: asked.append(f),
             is_cancelled=lambda: bool(asked))
    assert asked and list((tmp_path / "dask").iterdir()) == []


def test_a_task_failing_on_the_workers_fails_the_job_in_one_sentence_and_leaves_nothing(package, wide_scene,
                                                                                       tmp_path, cluster):
    address, _ = cluster
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    layers = {}
    for name, path in wide_scene.items():
        layers[name] = str(inputs / Path(path).name)
        Path(layers[name]).write_bytes(Path(path).read_bytes())

    def remove_the_ndsm(fraction, text):  # the blocks still to run cannot read it any more
        if fraction > 0 and os.path.exists(layers["ndsm"]):
            os.remove(layers["ndsm"])

    with pytest.raises(EngineError, match=r"^raster '.*ndsm\.tif' does not exist$"):
        _run(package, layers, tmp_path / "dask", address, progress=remove_the_ndsm)
    assert list((tmp_path / "dask").iterdir()) == []


def test_the_resampled_path_is_bit_identical_too(package, wide_scene, tmp_path, cluster):
    """0.2 m asked of a package run at 0.5 m: the blocks run on a 0.5 m grid (on the workers) and
    the client resamples their assembled probabilities onto the output grid."""
    address, _ = cluster
    finer = GridRequest(resolution=0.2)
    single, _ = _run(package, wide_scene, tmp_path / "single", grid=finer)
    lines = []
    parallel, _ = _run(package, wide_scene, tmp_path / "dask", address, grid=finer, log=lines.append)
    assert any("the network runs on a 700 x 230 px grid" in line for line in lines), lines
    assert gdal.Open(parallel.classes).RasterXSize == 1750
    _assert_identical(single, parallel)
    assert _leftovers(tmp_path / "dask") == []


def test_a_scheduler_without_workers_fails_in_one_sentence_and_leaves_nothing(package, wide_scene, tmp_path,
                                                                              monkeypatch):
    """Tasks sent to a scheduler no worker has joined would wait for ever: the job waits
    ``WORKER_WAIT_S`` for one, then says so."""
    from modalseg.engine import distributed as runner

    monkeypatch.setattr(runner, "WORKER_WAIT_S", 1.0)
    with distributed.LocalCluster(n_workers=0, processes=True, dashboard_address=":0", silence_logs=40) as empty:
        with pytest.raises(EngineError, match=r"^the Dask scheduler 'tcp://.*' has no worker: none joined in 1 s; "
                                              r"start workers for it \(dask worker tcp://.*\) or run on this machine "
                                              r"with local:N$"):
            _run(package, wide_scene, tmp_path / "dask", empty.scheduler_address)
    assert list((tmp_path / "dask").iterdir()) == []


def test_workers_that_finish_no_block_in_time_fail_the_job_and_leave_nothing(package, wide_scene, tmp_path,
                                                                            monkeypatch):
    """Workers that stop answering would keep the job waiting: once the job has found its workers
    (the log line that announces the tasks) and before any task can finish, both workers of a
    cluster of its own are stopped (SIGSTOP); ``STALL_S`` later the job stops, cancels its tasks and
    removes its parts folder. (Stopping them at the first finished block instead was a race: on a
    loaded machine every block could finish before the client saw the first one.)"""
    from modalseg.engine import distributed as runner

    monkeypatch.setattr(runner, "STALL_S", 2.0)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as local, distributed.Client(local) as client:
        pids = list(client.run(os.getpid).values())
        stopped = []

        def stop_the_workers_before_the_tasks(text):
            if text.startswith("Dask: ") and " blocks as tasks on " in text and not stopped:
                for pid in pids:
                    os.kill(pid, signal.SIGSTOP)
                stopped.extend(pids)

        try:
            with pytest.raises(EngineError, match=r"^no Dask task finished in 2 s \(0 of \d+ blocks done\): the "
                                                  r"workers of 'tcp://.*' stopped or cannot keep up; check that they "
                                                  r"are running, or use fewer tile rows per block$"):
                _run(package, wide_scene, tmp_path / "dask", local.scheduler_address, log=stop_the_workers_before_the_tasks)
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):  # a nanny may have replaced it meanwhile
                    os.kill(pid, signal.SIGCONT)
    assert stopped and list((tmp_path / "dask").iterdir()) == []


def test_a_workers_cached_runtime_serves_one_job_only(package):
    """What a worker's runtime learned in one job (a smaller batch after a GPU ran out of memory, said
    in that job's log) must not carry silently into the next job with the same settings."""
    from dataclasses import replace

    from modalseg.engine import distributed as dask_runner

    settings = (str(package.onnx_path), (), {}, {}, None, None, None, (), "gaussian", 4, "onnx", "cpu", 1, None, None)
    job = dask_runner.BlockJob(*settings)  # only what _runner reads is real
    assert job.job_id != dask_runner.BlockJob(*settings).job_id  # each job its own identity
    first = dask_runner._runner(job)[1]
    first.batch_limit = 2
    assert dask_runner._runner(job)[1] is first and first.batch_limit == 2  # the same job's next block
    following = dask_runner._runner(replace(job, job_id="the next job"))[1]
    assert following is not first and following.batch_limit is None
