"""models.finetune without QGIS: cancel, new classes, mapping, time budget (real LiDAR HD tile)."""
import json
from pathlib import Path

import numpy as np
import pytest

from modalseg.engine import LayerInput, bind_modalities, load_package
from modalseg.engine.errors import WARNING_PREFIX, Cancelled, EngineError
from modalseg.models.finetune import ClassResolver, FinetuneOptions, LabelInput, finetune, split_validation
from tests.fixtures.paths import REFERENCE_PACKAGE

STEM = "lidarprod_870000_6618000"
PACKAGE = REFERENCE_PACKAGE
FAST = dict(epochs=3, chip=64, batch_size=4, steps_per_epoch=3, patience=0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def houses(shared_data):
    return shared_data / "lidarhd_houses"


@pytest.fixture(scope="module")
def sources(houses):
    meta = load_package(PACKAGE).metadata
    bound, _ = bind_modalities(meta, {"optical": LayerInput(str(houses / f"{STEM}_rgb.tif")),
                                      "elevation": LayerInput(str(houses / f"{STEM}_ndsm.tif"), elevation_type="ndsm")})
    return bound


@pytest.fixture(scope="module")
def labels(houses):
    return LabelInput(raster=str(houses / f"{STEM}_label.tif"))


def test_cancel_keeps_the_best_epoch(sources, labels, tmp_path):
    epochs = []
    result = finetune(PACKAGE, sources, labels, tmp_path / "pkg", FinetuneOptions(**FAST),
                      on_epoch=epochs.append, is_cancelled=lambda: len(epochs) >= 1)
    # best epoch: 1, or 0 (the starting weights) if that one epoch scored lower on validation
    assert result.stopped == "cancelled" and result.epochs == 1 and result.best_epoch in (0, 1)
    assert load_package(result.onnx_path).metadata.extra["finetune"]["stopped"] == "cancelled"


def test_cancel_before_the_first_epoch_writes_nothing(sources, labels, tmp_path):
    with pytest.raises(Cancelled, match="before the first epoch"):
        finetune(PACKAGE, sources, labels, tmp_path / "pkg", FinetuneOptions(**FAST), is_cancelled=lambda: True)
    assert not (tmp_path / "pkg").exists()


def test_new_class_reinitialises_the_head(sources, labels, tmp_path):
    """Label 2 becomes a new class 'house': 7 classes; the kept classes keep their head rows."""
    log = []
    opts = FinetuneOptions(**{**FAST, "epochs": 1}, name="houses-7")
    result = finetune(PACKAGE, sources, LabelInput(raster=labels.raster, mapping={"2": "new:house"}),
                      tmp_path / "pkg", opts, log=log.append)
    meta = json.loads(Path(result.onnx_path).with_suffix(".json").read_text())
    assert [c["name"] for c in meta["classes"]][-1] == "house" and len(meta["classes"]) == 7
    assert meta["name"] == "houses-7"
    assert any("re-initialised" in line for line in log)
    assert not any("keep the starting model's decisions" in line for line in log)  # a new head: nothing to keep
    # nor is the starting model a candidate: it has never learnt the new class (kept, it made a
    # benchmark's seven new Landsat classes score 0.0; trained, 12.0)
    assert result.start_val_miou is None and result.best_epoch == 1
    assert not any("validation mIoU of the starting model" in line or "keeps the starting weights" in line
                   for line in log)
    assert any("no labelled pixel of class(es)" in line and "building" in line for line in log)
    assert load_package(result.onnx_path).metadata.classes[-1].value == 7


def test_time_budget_and_freeze(sources, labels, tmp_path):
    opts = FinetuneOptions(**{**FAST, "epochs": 50, "steps_per_epoch": 1000}, minutes=0.02, freeze="encoder",
                           val_fraction=0.0)
    log = []
    result = finetune(PACKAGE, sources, labels, tmp_path / "pkg", opts, log=log.append)
    assert result.stopped == "time budget" and result.epochs == 1
    assert any(line.startswith("frozen: encoder") for line in log)
    # a line of its own that starts with the prefix, so the adapter shows it as a warning
    assert WARNING_PREFIX + "no validation pixels; the best epoch is chosen by training loss" in log
    assert not any("Warning" in line and not line.startswith(WARNING_PREFIX) for line in log)


def test_mapping_and_unknown_labels():
    classes = load_package(PACKAGE).metadata.classes
    r = ClassResolver(classes, {"forest": "tree", "0": "ignore", "pool": "new:pool"})
    assert r("forest") == 4 and r("Building") == 2 and r(2.0) == 2 and r(0) is None
    assert r("pool") == 7 and r("pool") == 7  # one new class, however many features
    with pytest.raises(EngineError, match="label class 'meadow' is not a class"):
        r("meadow")
    with pytest.raises(EngineError, match="not a class of the model"):
        ClassResolver(classes, {"x": "lake"})("x")


def test_validation_strip_holds_the_requested_share_of_labels():
    index = np.full((10, 40), 255, np.uint8)
    index[:, 10:30] = 0  # labels only in the middle
    train, val, how = split_validation(index, 0.25)
    assert val[0] == 25 and train[2] == 25 and "right" in how
    assert split_validation(index, 0.0)[1] is None


def test_validation_strip_is_the_side_whose_classes_are_most_like_the_whole_set():
    """Sparse labels with one class along the right edge: the right strip (the old choice, across the
    longer side) would hold that class alone; the strip taken holds every class, in shares nearer the
    whole set's than any other side's."""
    from modalseg.models.finetune.labels import _strip

    index = np.full((20, 40), 255, np.uint8)
    for col in range(0, 30, 3):
        index[::4, col] = col // 3 % 3  # classes 0, 1, 2 spread over the left three quarters
    index[::4, 30:] = 2  # the right quarter: class 2 only

    def classes_and_distance(image, window):
        x0, y0, x1, y1 = window
        strip = image[y0:y1, x0:x1]
        held = np.bincount(strip[strip != 255], minlength=3)
        whole = np.bincount(image[image != 255], minlength=3)
        return int((held > 0).sum()), float(np.abs(held / held.sum() - whole / whole.sum()).sum())

    for image, old_side in ((index, "right"), (index.T.copy(), "bottom")):
        train, val, how = split_validation(image, 0.2)
        assert not how.startswith(old_side)
        assert classes_and_distance(image, _strip(image != 255, old_side, 0.2)[1])[0] == 1
        present, distance = classes_and_distance(image, val)
        assert present == 3
        for side in ("right", "left", "bottom", "top"):
            assert distance <= classes_and_distance(image, _strip(image != 255, side, 0.2)[1])[1] + 1e-9
        x0, y0, x1, y1 = val
        share = (image[y0:y1, x0:x1] != 255).sum() / (image != 255).sum()
        assert 0.15 <= share <= 0.35, share
        tx0, ty0, tx1, ty1 = train  # training and validation windows tile the area without overlap
        assert (tx1 - tx0) * (ty1 - ty0) + (x1 - x0) * (y1 - y0) == image.size


def test_area_of_interest_limits_the_labels(sources, labels, tmp_path):
    """Only labels inside the AOI polygon (the tile's left 30 m, given in WGS 84) are used."""
    from osgeo import ogr, osr

    x0, y1 = 870200.0, 6617145.5
    l93, wgs = osr.SpatialReference(), osr.SpatialReference()
    l93.ImportFromEPSG(2154)
    wgs.ImportFromEPSG(4326)
    for s in (l93, wgs):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ring = ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {y1 - 62.5},{x0 + 30} {y1 - 62.5},{x0 + 30} {y1},"
                                     f"{x0} {y1},{x0} {y1 - 62.5}))")
    ring.Transform(osr.CoordinateTransformation(l93, wgs))
    path = str(tmp_path / "aoi.gpkg")
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    lyr = ds.CreateLayer("aoi", srs=wgs, geom_type=ogr.wkbPolygon)
    f = ogr.Feature(lyr.GetLayerDefn())
    f.SetGeometry(ring)
    lyr.CreateFeature(f)
    f = lyr = ds = None
    log = []
    opts = FinetuneOptions(**{**FAST, "epochs": 1})
    finetune(PACKAGE, sources, LabelInput(raster=labels.raster, aoi=path), tmp_path / "pkg", opts, log=log.append)
    area = next(line for line in log if line.startswith("labelled area:"))
    width = int(area.split(":")[1].split("x")[0])
    assert width <= 60 + opts.chip // 2 + 1, area  # 30 m = 60 px of labels, plus the context margin


@pytest.mark.parametrize("pixel, learns_at, gsd_min", [(0.125, 0.25, 0.25), (0.05, 0.05, 0.05)])
def test_finetuning_learns_at_the_pixel_size_segment_runs_the_model_at(houses, labels, tmp_path, pixel, learns_at,
                                                                       gsd_min):
    """A layer finer than the package's range (0.25-2 m) is resampled into it, as segment will run the
    tuned model (fine-tuning at 0.2 m a model made for 0.5 m collapsed it: held-out mIoU 52 -> 7);
    a layer 5x outside is another domain: learnt at its own pixel size, the range widened to it."""
    from osgeo import gdal

    layers = {}
    for key in ("rgb", "ndsm"):
        layers[key] = str(tmp_path / f"{key}.tif")
        gdal.Translate(layers[key], str(houses / f"{STEM}_{key}.tif"), xRes=pixel, yRes=pixel, resampleAlg="near")
    bound, _ = bind_modalities(load_package(PACKAGE).metadata,
                               {"optical": LayerInput(layers["rgb"]),
                                "elevation": LayerInput(layers["ndsm"], elevation_type="ndsm")})
    log = []
    result = finetune(PACKAGE, bound, labels, tmp_path / "pkg", FinetuneOptions(**{**FAST, "epochs": 1}),
                      log=log.append)
    area = next(line for line in log if line.startswith("labelled area:"))
    assert f" px at {learns_at:.3g} m" in area, area
    width = int(area.split(":")[1].split("x")[0])
    assert width == round(100 / learns_at), area  # the whole 100 m tile
    said = [line for line in log if "outside the range model" in line]
    assert len(said) == 1 and (f"fine-tuning learns at {learns_at:g} m" in said[0]), said
    assert said[0].startswith(WARNING_PREFIX + "the pixel size"), said  # resampling or widening: a warning
    gsd = load_package(result.onnx_path).metadata.gsd
    assert gsd.native == pytest.approx(learns_at) and gsd.min == pytest.approx(gsd_min) and gsd.max == 2.0


def test_unlabelled_pixels_keep_the_starting_models_decisions(sources, labels, tmp_path):
    """keep_prior > 0: a frozen copy of the starting network is distilled into the tuned one where no
    label is; 0 turns it off. With labels on one corner only, the tuned model stays nearer the
    starting model elsewhere than without it."""
    import onnxruntime as ort
    from osgeo import gdal

    corner = str(tmp_path / "corner.tif")
    gdal.Translate(corner, labels.raster, srcWin=[0, 0, 40, 40])  # 20 m x 20 m of labels
    feeds = {}
    for source in sources:
        data = gdal.Open(source.path).ReadAsArray().astype(np.float32)
        feeds[source.modality] = data[None] if data.ndim == 2 else data
    start = ort.InferenceSession(str(PACKAGE), providers=["CPUExecutionProvider"])

    def agreement(onnx_path):
        from modalseg.engine.normalize import normalize, own_statistics
        meta = load_package(PACKAGE).metadata
        feed = {}
        for m, d in feeds.items():
            spec = meta.modality(m).normalization
            ok = np.ones(d.shape[1:], bool)
            feed[m] = normalize(d[:, :96, :192], ok[:96, :192], spec, own_statistics(d, ok, spec))[None]
        feed[meta.presence_input] = np.ones((1, len(feeds)), np.float32)
        tuned = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        a, b = start.run(["logits"], feed)[0].argmax(1), tuned.run(["logits"], feed)[0].argmax(1)
        return float((a[:, 40:, 40:] == b[:, 40:, 40:]).mean())

    runs = {}
    for keep in (0.0, 5.0):
        log = []
        opts = FinetuneOptions(**{**FAST, "epochs": 2, "steps_per_epoch": 8}, learning_rate=5e-3, val_fraction=0.0,
                               keep_prior=keep)
        result = finetune(PACKAGE, sources, LabelInput(raster=corner), tmp_path / f"keep{keep}", opts, log=log.append)
        said = [line for line in log if "keep the starting model's decisions" in line]
        assert said == ([] if keep == 0 else ["unlabelled pixels keep the starting model's decisions (weight 5)"])
        runs[keep] = agreement(result.onnx_path)
    assert runs[5.0] > runs[0.0], runs


def test_a_validation_strip_of_few_pixels_is_called_out(sources, labels, tmp_path):
    from osgeo import gdal

    corner = str(tmp_path / "corner.tif")
    gdal.Translate(corner, labels.raster, srcWin=[0, 0, 40, 40])  # 1600 labelled px, a fifth validates
    log = []
    finetune(PACKAGE, sources, LabelInput(raster=corner), tmp_path / "pkg", FinetuneOptions(**{**FAST, "epochs": 1}),
             log=log.append)
    area = next(line for line in log if line.startswith("labelled area:"))
    shown = int(area.split("(")[1].split(" labelled")[0])
    assert 0 < shown < 500, area
    assert (WARNING_PREFIX + f"the validation strip holds only {shown} labelled pixels: too few to tell a better "
            "model from a worse one") in "\n".join(log)
    log = []
    finetune(PACKAGE, sources, labels, tmp_path / "whole", FinetuneOptions(**{**FAST, "epochs": 1}), log=log.append)
    assert not any("too few to tell" in line for line in log)  # the whole tile: thousands
