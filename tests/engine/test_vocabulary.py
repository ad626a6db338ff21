"""engine.vocabulary: the saved positions of every choice stay put, and the engine accepts every key
of each vocabulary (and refuses others, naming the valid ones)."""
import numpy as np
import pytest

from modalseg.engine import (EngineError, GridRequest, LayerInput, OutputPaths, RunOptions, bind_modalities,
                             load_package, run_segmentation)
from modalseg.engine.package import parse_metadata
from modalseg.engine.runtime import make_runner
from modalseg.engine.tiling import blend_window, plan_tiles
from modalseg.engine.vocabulary import (BLEND_WINDOWS, DEVICES, ELEVATION_TYPES, OPTICAL_TYPES, PRECISIONS, RUNTIMES,
                                        SAR_SCALES, check_key, key_at, keys, labels)
from tests.fixtures.onnx_models import base_metadata, make_pixelwise
from tests.fixtures.paths import REFERENCE_PACKAGE
from tests.fixtures.rasters import read, smooth_field, write_raster

GT = (500000.0, 1.0, 0.0, 6000000.0, 0.0, -1.0)
VOCABULARIES = {"device": DEVICES, "runtime": RUNTIMES, "blend window": BLEND_WINDOWS,
                "elevation type": ELEVATION_TYPES, "SAR values": SAR_SCALES, "precision": PRECISIONS,
                "optical type": OPTICAL_TYPES}
# What saved .model3 files, batch histories and qgis_process scripts hold: enum position i means
# key i. New choices may follow these; none may move.
SAVED_POSITIONS = {"device": ("auto", "cpu", "cuda"), "runtime": ("onnx", "torch"),
                   "blend window": ("hann", "linear", "none"), "elevation type": ("auto", "dsm", "ndsm"),
                   "SAR values": ("auto", "db", "linear"), "precision": ("auto", "fp32", "int8", "fp16"),
                   "optical type": ("rgb", "irc")}


@pytest.mark.parametrize("what", sorted(VOCABULARIES))
def test_saved_positions_keep_their_keys(what):
    choices = VOCABULARIES[what]
    saved = SAVED_POSITIONS[what]
    assert keys(choices)[:len(saved)] == saved
    assert [key_at(choices, i) for i in range(len(choices))] == list(keys(choices))
    assert len(set(keys(choices))) == len(choices) and len(set(labels(choices))) == len(choices)
    assert all(label.strip() for label in labels(choices))


@pytest.mark.parametrize("what", sorted(VOCABULARIES))
def test_unknown_keys_are_refused_with_the_valid_ones(what):
    choices = VOCABULARIES[what]
    for key in keys(choices):
        assert check_key(choices, key, what) == key
    with pytest.raises(EngineError, match=f"{what} must be one of {', '.join(keys(choices))}, not 'bogus'"):
        check_key(choices, "bogus", what)


@pytest.fixture(scope="module")
def pixelwise(tmp_path_factory):
    return load_package(make_pixelwise(tmp_path_factory.mktemp("model") / "pixelwise"))


@pytest.mark.parametrize("device", keys(DEVICES))
def test_every_device_is_accepted_by_the_onnx_runner(pixelwise, device):
    try:
        runner = make_runner(pixelwise, "onnx", device, threads=1)
    except EngineError as exc:  # a machine without a GPU refuses 'cuda' for that reason only
        assert device == "cuda" and "CUDA was requested" in str(exc)
        return
    assert runner.device.startswith("GPU" if runner.on_gpu else "CPU")
    if device == "cpu":
        assert not runner.on_gpu


@pytest.mark.skipif(not REFERENCE_PACKAGE.exists(), reason="reference package not built")
@pytest.mark.parametrize("runtime", keys(RUNTIMES))
def test_every_runtime_is_accepted_by_make_runner(runtime):
    package = load_package(REFERENCE_PACKAGE)
    loader = None
    if runtime == "torch":
        pytest.importorskip("torch")
        from modalseg.models.networks.registry import load_network

        loader = load_network
    runner = make_runner(package, runtime, "cpu", threads=1, network_loader=loader)
    feeds = {name: np.zeros((1, package.metadata.modality(name).bands, 32, 32), np.float32)
             for name in package.metadata.modality_names}
    if package.metadata.presence_input:
        feeds[package.metadata.presence_input] = np.ones((1, len(feeds)), np.float32)
    logits, _ = runner.run(feeds)
    assert logits.shape == (1, len(package.metadata.classes), 32, 32)


def test_the_torch_runtime_asks_for_its_network_loader():
    if not REFERENCE_PACKAGE.exists():
        pytest.skip("reference package not built")
    with pytest.raises(EngineError, match="torch runtime needs the network loader"):
        make_runner(load_package(REFERENCE_PACKAGE), "torch", "cpu")


@pytest.mark.parametrize("kind", keys(BLEND_WINDOWS))
def test_every_blend_window_weights_every_pixel(kind):
    plan = plan_tiles(100, 90, 48, 16, 8)
    total = np.zeros((90, 100))
    for tile in plan.all_tiles():
        weights = blend_window(plan, tile, kind)
        assert weights.shape == (plan.tile_height, plan.tile_width) and (weights >= 0).all()
        total[tile.y:tile.y + plan.tile_height, tile.x:tile.x + plan.tile_width] += weights
    assert (total > 0).all()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    optical = (np.stack([smooth_field((70, 90), s) for s in (1, 2, 3)]) * 255).astype(np.uint8)
    ndsm = (smooth_field((70, 90), 4) * 20).astype(np.float32)
    dtm = np.full((70, 90), 100.0, np.float32)
    return {"optical": str(write_raster(folder / "optical.tif", optical, 32631, GT)),
            "ndsm": str(write_raster(folder / "ndsm.tif", ndsm, 32631, GT)),
            "dsm": str(write_raster(folder / "dsm.tif", ndsm + dtm, 32631, GT)),
            "dtm": str(write_raster(folder / "dtm.tif", dtm, 32631, GT))}


def test_every_blend_window_runs_through_run_options(pixelwise, scene, tmp_path):
    """The pixelwise model's result does not depend on the tiles, so every window gives the same map."""
    sources, _ = bind_modalities(pixelwise.metadata, {"optical": LayerInput(scene["optical"]),
                                                      "elevation": LayerInput(scene["ndsm"])})
    maps = {}
    for kind in keys(BLEND_WINDOWS):
        report = run_segmentation(sources, pixelwise, GridRequest(), OutputPaths(str(tmp_path / f"{kind}.tif")),
                                  RunOptions(tile_size=32, overlap=8, blend=kind, device="cpu", threads=1))
        maps[kind] = read(report.outputs["classes"])[0]
    first = maps[key_at(BLEND_WINDOWS, 0)]
    for kind, classes in maps.items():
        assert np.array_equal(classes, first), kind


@pytest.mark.parametrize("elevation_type", keys(ELEVATION_TYPES))
def test_every_elevation_type_binds(scene, elevation_type):
    """With a DTM given, a DSM becomes an nDSM; an nDSM is taken as it is; 'auto' reads the DTM as
    'this is a DSM'."""
    meta = parse_metadata(base_metadata("m", {"type": "minmax", "min": [0] * 3, "max": [255] * 3},
                                        {"type": "minmax", "min": [0], "max": [20]}))
    elevation = scene["ndsm"] if elevation_type == "ndsm" else scene["dsm"]
    sources, _ = bind_modalities(meta, {"elevation": LayerInput(elevation, elevation_type=elevation_type),
                                        "dtm": LayerInput(scene["dtm"])})
    (source,) = sources
    assert source.modality == "ndsm" and source.path == elevation
    assert source.subtract_path == (None if elevation_type == "ndsm" else scene["dtm"])
