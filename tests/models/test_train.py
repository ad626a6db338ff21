"""Training CLI (the recipe path) with the real networks on synthetic scenes: every network trains
and exports a package the engine loads; the bundled recipe's shape learns; resume is exact."""
import json
import math
import re

import numpy as np
import pytest
import torch

from modalseg.engine.package import load_package
from modalseg.models import train as train_mod
from modalseg.models.data.shared_data import PLUGIN_ROOT
from modalseg.models.data.synthetic import synthetic_scene, write_scene
from modalseg.models.optimisation import lr_at
from tests.models.tiny_networks import ARCHITECTURES, TINY, modality_entries

torch.set_num_threads(1)
STEP_LINE = re.compile(r"^step (\d+)/\d+ loss (\S+)")


def _config(tmp_path, steps, architecture="sgma", derived=False, **train):
    """The bundled SGMA recipe with a tiny network, synthetic data and a short schedule."""
    folder = tmp_path / "data"
    if not folder.exists():
        for i in range(2):
            write_scene(folder, synthetic_scene(96, seed=10 + i), f"s{i}", origin=(500000.0 + 1000 * i, 6600000.0))
    cfg = json.loads((PLUGIN_ROOT / "training" / "sgma_default.json").read_text())
    tiny = TINY[architecture]["network"]
    cfg["name"] = f"tiny-{architecture}"
    if derived:  # the bundled packages' shape: elevation features derived inside the graph
        cfg["network"] = {"inner_architecture": architecture, "derive": {"ndsm": "elevation_v1"},
                          "inner_config": dict(tiny, refine_dim=8, detail_dim=4)}
    else:
        cfg["architecture"], cfg["network"] = architecture, dict(tiny)
        cfg["modalities"] = modality_entries(architecture, with_source=True)
        cfg["train"].pop("loss_terms", None)  # the network's own loss weights
    cfg["data"].update(root=str(folder), folders=[{"path": ".", "group": "synthetic"}], chip=64,
                       gsd_range=None, val_fraction=0.3)
    cfg["train"].update({"steps": steps, "batch": 4, "lr": 0.01, "warmup": 2, "log_every": 2, "val_every": steps,
                         "threads": 1, "ckpt_every": 4, "class_weights": None, "max_minutes": 5, "hard_pixel": None,
                         "ema": 0, **train})
    cfg["package"]["weight_storage"] = "float32"  # the shipped recipe stores float16; these tests compare weights
    return cfg


def _step_losses(lines):
    return [float(m.group(2)) for m in map(STEP_LINE.match, lines) if m]


def test_lr_schedule():
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0, abs=1e-5)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.0, abs=1e-5)
    assert lr_at(55, 100, 1.0, 10) == pytest.approx(0.5 ** 0.9, abs=1e-5)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_network_trains_through_the_recipe(architecture, tmp_path):
    lines = []
    path = train_mod.train(_config(tmp_path, 6, architecture), tmp_path / "pkg", log=lines.append)
    losses = _step_losses(lines)
    assert len(losses) == 3 and all(math.isfinite(x) and x > 0 for x in losses), lines
    pkg = load_package(path)  # the engine's validating reader
    assert pkg.metadata.extra["torch"]["architecture"] == architecture
    assert pkg.metadata.modality_names == tuple(TINY[architecture]["modalities"])
    assert pkg.metadata.extra["training_config"]["architecture"] == architecture
    # the paper's auxiliary terms are part of the step, and logged with it
    expected = {"sgma": None, "emsnet": None, "ammnet": "alignment", "asanet": "aux_ce", "mobanet": "hard_aux_ce"}
    if expected[architecture]:
        assert any(f"{expected[architecture]} " in line for line in lines if line.startswith("step")), lines


def test_bundled_recipe_shape_learns_and_exports(tmp_path):
    """Derived elevation features around SGMA, dual path, hard-pixel term and weight averaging."""
    cfg = _config(tmp_path, 60, derived=True, hard_pixel={"keep": 0.25, "weight": 1.0}, ema=0.9)
    lines = []
    path = train_mod.train(cfg, tmp_path / "pkg", log=lines.append)
    losses = _step_losses(lines)
    assert losses[-1] < 0.8 * losses[0], losses
    assert any("hard_pixel " in line for line in lines if line.startswith("step"))
    pkg = load_package(path)
    val = pkg.metadata.metrics["validation"]["synthetic"]
    # strips held out on the right of each synthetic tile; chance mIoU over 4 classes is ~0.1
    assert val["subsets"]["optical+ndsm"]["miou"] > 0.3, val["subsets"]
    assert val["top1"] >= val["average"] >= val["last1"]
    assert pkg.metadata.extra["torch"]["architecture"] == "derived-inputs"
    assert pkg.metadata.architecture == "sgma (+ in-graph elevation features)"
    assert pkg.metadata.attribution.startswith("IGN")
    card = (path.parent / "README.md").read_text()  # model card from the same metadata
    assert f"**{100 * val['subsets']['optical+ndsm']['miou']:.1f}**" in card and "Known failure modes" in card


def test_resume_reproduces_uninterrupted_run(tmp_path):
    """SGMA's MAS sampling and dropout draw from torch's RNG, which the checkpoint restores (with
    the averaged weights and the hard-pixel term, the bundled recipes' knobs)."""
    extra = {"hard_pixel": {"keep": 0.25, "weight": 1.0}, "ema": 0.9}
    straight = train_mod.train(_config(tmp_path, 8, **extra), tmp_path / "a", log=lambda s: None)
    train_mod.train(_config(tmp_path, 8, stop_after=4, **extra), tmp_path / "b", log=lambda s: None)
    lines = []
    resumed = train_mod.train(_config(tmp_path, 8, **extra), tmp_path / "b", resume=True, log=lines.append)
    assert any("resumed at step 4" in line for line in lines)
    from safetensors.numpy import load_file
    a, b = load_file(str(straight.with_suffix(".safetensors"))), load_file(str(resumed.with_suffix(".safetensors")))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6)


def test_misspelt_loss_term_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="SGMA has no loss term mas_weigths"):
        train_mod.train(_config(tmp_path, 4, loss_terms={"mas_weigths": [1, 1]}), tmp_path / "pkg",
                        log=lambda s: None)
    assert not (tmp_path / "pkg").exists()


def test_selection_last_exports_the_final_weights(tmp_path):
    """``train.selection: "last"`` ships the averaged weights of the last step, ``"best"`` (the
    default) the best-scoring checkpoint; validation every 2 of 6 steps makes them differ."""
    import torch as _torch
    from safetensors.numpy import load_file

    paths = {}
    for selection in ("best", "last"):
        cfg = _config(tmp_path, 6, ema=0.5, val_every=2, selection=selection)
        cfg["train"]["ckpt_dir"] = str(tmp_path / f"ck-{selection}")
        paths[selection] = train_mod.train(cfg, tmp_path / selection, log=lambda s: None)
    for selection, key in (("last", "ema"), ("best", "best_state")):
        ck = _torch.load(tmp_path / f"ck-{selection}" / "last.pt", map_location="cpu", weights_only=True)
        shipped = load_file(str(paths[selection].with_suffix(".safetensors")))
        for k, v in ck[key].items():
            if v.dtype.is_floating_point:
                np.testing.assert_allclose(shipped[k], v.numpy(), atol=1e-6, err_msg=f"{selection} {k}")
    best_step = max(ck["history"], key=lambda h: h["val"])["step"]
    if best_step != 6:  # the best checkpoint is not the last one: the two packages differ
        last = load_file(str(paths["last"].with_suffix(".safetensors")))
        assert any(not np.allclose(shipped[k], last[k]) for k in last)


def test_whole_validation_tiles_never_train_and_held_out_tiles_are_in_neither(shared_data):
    """``validation_tiles`` of a folder entry: those stacks validate whole and never train; with the
    entry's ``val_fraction`` 0 the other stacks train whole; the held-out set stays out of both."""
    from modalseg.models.data.holdout import HELD_OUT_STACKS
    from modalseg.models.train import build_areas

    whole = ["ignplugin_mnx_crop_3", "test_data_77050_627755_LA93_IGN69"]
    cfg = {"modalities": [{"name": "ndsm", "source": "ndsm", "bands": 1}],
           "data": {"root": str(shared_data), "val_fraction": 0.2, "folders": [
               {"path": "lidarhd_elevation", "exclude": ["decim_"], "group": "towns", "val_fraction": 0.0,
                "validation_tiles": whole},
               {"path": "lidarhd_elevation", "include": ["decim_"], "group": "towns"}]}}
    train, val, weights, groups = build_areas(cfg)
    trained = {a.stack.name for a in train}
    validated = {a.stack.name: a for a in val}
    assert not trained & set(whole) and set(whole) <= set(validated)
    for name in whole:
        area = validated[name]
        assert area.window == (0, 0, area.stack.width, area.stack.height)
    assert not (trained | set(validated)) & set(HELD_OUT_STACKS["lidarhd_elevation"])
    for area in train:
        if area.stack.name.startswith("decim_"):  # strips for the entry without validation tiles
            assert area.window[2] == round(0.8 * area.stack.width) and area.stack.name in validated
        else:
            assert area.window == (0, 0, area.stack.width, area.stack.height)
    assert len(groups) == len(val) and len(weights) == len(train) == 8


def test_an_orthophoto_trains_with_labels_rasterised_from_its_point_cloud(shared_data):
    """``"format": "point_cloud"``: the BD ORTHO south half with labels, DSM and nDSM from the LiDAR
    cloud on its own 0.2 m grid; the held-out north half is refused by name."""
    from modalseg.models.train import build_areas

    classes = [{"value": v, "name": n, "color": "#000000"} for v, n in
               [(1, "ground"), (2, "building"), (3, "low vegetation"), (4, "tree"), (5, "water"), (6, "other")]]
    entry = {"format": "point_cloud", "ortho": "point_clouds/bdortho_pacasam_792000_6272000_left_rgb_south.tif",
             "point_cloud": "point_clouds/lidarhd_pacasam_792000_6272000_left.laz", "group": "rgb_tiles"}
    cfg = {"classes": classes, "modalities": [{"name": "optical", "source": "rgb", "bands": 3}],
           "data": {"root": str(shared_data), "val_fraction": 0.2, "folders": [entry]}}
    train, val, _, groups = build_areas(cfg)
    stack = train[0].stack
    assert stack.gsd == pytest.approx(0.2) and set(stack.files) == {"rgb", "ndsm", "dsm"}
    from osgeo import gdal

    values = gdal.Open(str(stack.label)).ReadAsArray()
    assert {1, 2} <= set(np.unique(values)) and set(np.unique(values)) <= {0, 1, 2}
    assert (values == 2).mean() > 0.05  # roofs of the village, not a handful of cells
    assert train[0].window[2] == round(0.8 * stack.width) and groups == ["rgb_tiles"]
    entry["ortho"] = "point_clouds/bdortho_pacasam_792000_6272000_left_rgb_north.tif"
    with pytest.raises(ValueError, match="held-out optical area"):
        build_areas(cfg)


def test_synthetic_scenes_train_whole_beside_real_tiles_and_are_the_same_every_time(shared_data):
    """``"format": "synthetic"``: procedural scenes written once under build/cache, trained whole
    (``val_fraction`` 0) with the entry's share of the chips; the real tiles keep their strips."""
    from osgeo import gdal

    from modalseg.models.train import build_areas, synthetic_folder

    entry = {"format": "synthetic", "count": 3, "size": 128, "seed": 7, "group": "synthetic", "weight": 0.25,
             "val_fraction": 0.0}
    cfg = {"modalities": [{"name": "ndsm", "source": "ndsm", "bands": 1}],
           "data": {"root": str(shared_data), "val_fraction": 0.2, "folders": [
               {"path": "lidarhd_elevation", "include": ["decim_"], "group": "towns", "weight": 0.75}, entry]}}
    train, val, weights, groups = build_areas(cfg)
    synthetic = [(a, w) for a, w in zip(train, weights) if a.stack.name.startswith("synthetic_")]
    assert sorted(a.stack.name for a, _ in synthetic) == ["synthetic_0007", "synthetic_0008", "synthetic_0009"]
    assert all(a.window == (0, 0, 128, 128) and set(a.stack.files) == {"ndsm"} for a, _ in synthetic)
    assert sum(w for _, w in synthetic) == pytest.approx(0.25)
    assert "synthetic" not in groups and len(val) == 2  # the two decim_ strips validate, nothing synthetic
    found = set().union(*(np.unique(gdal.Open(str(a.stack.label)).ReadAsArray()).tolist() for a, _ in synthetic))
    assert {1, 2, 3, 4} <= found  # ground, buildings, low vegetation and trees
    labels = gdal.Open(str(synthetic[0][0].stack.label)).ReadAsArray()
    again = synthetic_folder(entry) / "synthetic_0007_label.tif"
    np.testing.assert_array_equal(gdal.Open(str(again)).ReadAsArray(), labels)
    entry.pop("group")  # an entry without a group (it has no path either) groups under its format
    cfg["data"]["folders"] = [dict(entry, val_fraction=0.5)]
    _, val, _, groups = build_areas(cfg)
    assert groups == ["synthetic"] * 3 and len(val) == 3


def test_validation_runs_on_the_grid_segment_would_use(tmp_path):
    """A package trained at one pixel size (gsd min = max = 1 m) is validated on 0.5 m stacks resampled
    to 1 m, as segment runs it, and its prediction is scored back on the label grid."""
    cfg = _config(tmp_path, 2)
    _, val_areas, _, groups = train_mod.build_areas(cfg)
    seen = []

    def ground_everywhere(feed, present):
        shape = next(iter(feed.values())).shape[-2:]
        seen.append(shape)
        return np.zeros(shape, np.int64)

    cfg["package"]["gsd"] = {"native": 1.0, "min": 1.0, "max": 1.0}
    coarse = train_mod.evaluate(ground_everywhere, val_areas, groups, cfg, subsets="full")
    windows = [(a.window[3] - a.window[1], a.window[2] - a.window[0]) for a in val_areas]
    assert seen == [(round(h / 2), round(w / 2)) for h, w in windows]
    seen.clear()
    cfg["package"]["gsd"] = {"native": 0.5, "min": 0.25, "max": 2.0}
    native = train_mod.evaluate(ground_everywhere, val_areas, groups, cfg, subsets="full")
    assert seen == windows
    # ground everywhere scores the same on either grid: only the ground IoU is non-zero
    for group in native:
        a, b = (r[group]["subsets"]["optical+ndsm"]["iou"] for r in (coarse, native))
        assert a["ground"] == pytest.approx(b["ground"]) and a["ground"] > 0


def test_a_recipe_that_extends_another_states_only_what_it_changes(tmp_path):
    base = {"name": "base", "data": {"chip": 128, "gsd_range": [0.5, 2.0], "folders": [{"path": "a"}, {"path": "b"}]},
            "train": {"steps": 2400, "seed": 0}}
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "variant.json").write_text(json.dumps(
        {"extends": "base.json", "name": "variant", "data": {"gsd_range": [0.5, 0.5], "folders": [{"path": "c"}]}}))
    cfg = train_mod.load_config(tmp_path / "variant.json")
    assert cfg["name"] == "variant" and cfg["train"] == base["train"]
    assert cfg["data"] == {"chip": 128, "gsd_range": [0.5, 0.5], "folders": [{"path": "c"}]}  # lists replaced whole
    assert cfg["_config_path"] == str((tmp_path / "variant.json").resolve()) and "extends" not in cfg


def test_every_recipe_loads_whole():
    for path in sorted((PLUGIN_ROOT / "training").glob("*.json")):
        cfg = train_mod.load_config(path)
        for key in ("name", "network", "classes", "modalities", "data", "train", "package"):
            assert key in cfg, f"{path.name}: {key}"
