"""models.held_out: the bundled default package on the real held-out set through run_segmentation,
the contract form of metrics.held_out, and --write storing it where segment and the card read it."""
import json
import shutil

import numpy as np
import pytest
from osgeo import gdal

from tests.fixtures.paths import REPO_ROOT
from modalseg.engine.metrics import confusion_from_values
from modalseg.engine.package import load_package
from modalseg.models import held_out
from modalseg.models.data.holdout import HELD_OUT_STACKS

DEFAULT = REPO_ROOT / "resources" / "models" / "modalseg-sgma-urban"


def test_figures_are_percent_over_classes_1_to_4_with_enough_support():
    values = [1, 2, 3, 4, 5, 6]
    reference = np.array([1] * 300 + [2] * 300 + [3] * 100 + [5] * 300)
    predicted = np.array([1] * 300 + [2] * 150 + [1] * 150 + [3] * 100 + [5] * 300)
    f = held_out.figures(confusion_from_values(reference, predicted, values), values)
    # ground 300 / 450, building 150 / 300; low vegetation (100 px < 200) and water (not 1-4) stay out
    assert f["classes_in_miou"] == [1, 2]
    assert f["miou"] == pytest.approx(round(100 * (300 / 450 + 0.5) / 2, 1))
    assert f["per_class"] == {"1": 66.7, "2": 50.0, "3": 100.0, "5": 100.0}
    assert f["pixels"] == 1000


def test_default_package_on_the_held_out_set(shared_data, tmp_path):
    package = load_package(DEFAULT)
    lines = []
    result = held_out.evaluate_held_out(package, shared_data, seen_in_training=False, cache=tmp_path / "cache",
                                        log=lines.append)
    assert list(result["subsets"]) == ["optical", "ndsm", "optical+ndsm"]
    assert result["optimistic"] is False  # what the automatic choice compares packages by
    assert set(result["groups"]) == {"0.5 m tiles", "2 m tiles", held_out.OPTICAL_GROUP}
    # every labelled pixel of the tiles is scored once (nDSM only), plus the optical area's
    tile_pixels = sum(int((gdal.Open(str(shared_data / folder / f"{stem}_label.tif")).ReadAsArray() > 0).sum())
                      for folder, stems in HELD_OUT_STACKS.items() for stem in stems)
    area = result["groups"][held_out.OPTICAL_GROUP]
    assert result["subsets"]["ndsm"]["pixels"] == tile_pixels + area["ndsm"]["pixels"]
    # the optical area's labels come from its cloud: ground and building only, same pixels for every subset
    assert set(area["optical"]["per_class"]) <= {"1", "2"}
    assert area["optical"]["pixels"] == area["optical+ndsm"]["pixels"] > 40000
    for subset in result["subsets"].values():
        assert subset["miou"] is None or 0 <= subset["miou"] <= 100
    # elevation works on whole unseen-grid tiles; the optical-only stream does not (issue 13)
    assert result["groups"]["0.5 m tiles"]["ndsm"]["miou"] > 55
    assert result["subsets"]["optical"]["miou"] < 50
    assert any("rasterised" in line for line in lines)
    assert "none of these areas is trained on" in result["protocol"]


def test_write_stores_the_figures_in_json_graph_and_card(tmp_path):
    folder = tmp_path / DEFAULT.name
    shutil.copytree(DEFAULT, folder)
    package = load_package(folder)
    figures = {"protocol": "a test protocol", "subsets": {"ndsm": {"miou": 61.5, "per_class": {"1": 90.0, "2": 33.0},
                                                                   "pixels": 1234, "classes_in_miou": [1, 2]},
                                                          "optical": {"miou": 12.3, "per_class": {"1": 24.6},
                                                                      "pixels": 99, "classes_in_miou": [1]}}}
    stale = held_out.store_metrics(package, {"held_out": figures})
    assert stale == sorted(package.variants.values())  # variants of the old graph are named
    if (folder / f"{DEFAULT.name}.int8.onnx").exists():
        assert folder / f"{DEFAULT.name}.int8.onnx" in stale
        assert "int8.onnx recorded the graph's old checksum" in held_out.stale_variants_note(stale)
    assert load_package(folder).metadata.metrics["held_out"] == figures  # the graph's embedded copy
    sidecar = json.loads((folder / f"{DEFAULT.name}.json").read_text())
    assert sidecar["metrics"]["held_out"] == figures
    card = (folder / "README.md").read_text()
    assert "Protocol: a test protocol." in card and "| all, pooled | ndsm | 90.0 | 33.0 |" in card
    assert "Held-out accuracy with optical alone is low (mIoU 12.3 %)" in card
    assert "Held-out IoU below 40 % with ndsm: building 33.0." in card
    assert not list(folder.glob(".*.tmp"))
    assert not held_out.states_seen_in_training(load_package(folder))
    seen = {**figures, "protocol": held_out.protocol([], True)}
    held_out.store_metrics(package, {"held_out": seen})
    assert held_out.states_seen_in_training(load_package(folder)) and "CAUTION" in seen["protocol"]


def test_a_package_of_other_classes_is_refused_in_one_sentence(tmp_path):
    from modalseg.engine.errors import EngineError
    from tests.fixtures.onnx_models import make_constant

    package = load_package(make_constant(tmp_path / "constant"))  # classes 1-3: no tree
    assert not held_out.measures(package.metadata)
    with pytest.raises(EngineError, match=r"^the held-out set is labelled with the urban classes 1-4 .*model "
                                          r"'constant' has classes 1 red wins, 2 green wins, 3 blue wins$"):
        held_out.evaluate_held_out(package)


def test_figures_of_a_twin_say_so_and_keep_the_shipped_weights_own_beside_them(tmp_path):
    """``--twin``: the figures come from the recipe trained without the held-out set; the protocol
    says so and still states that the shipped weights saw the tiles; the card lists their own."""
    from modalseg.engine.errors import EngineError

    folder = tmp_path / DEFAULT.name
    shutil.copytree(DEFAULT, folder)
    package = load_package(folder)
    held_out.same_recipe(package, load_package(DEFAULT))
    with pytest.raises(EngineError, match=r"is not the same recipe as .*: its name differ \(modalseg-flood-s1s2 "):
        held_out.same_recipe(package, load_package(REPO_ROOT / "resources" / "models" / "modalseg-flood-s1s2"))
    text = held_out.twin_protocol(held_out.protocol([], False), [package, package], package)
    assert "figures of a twin" in text and "none of these areas is trained on" in text and "mean of 2 seeds" in text and "2400 steps on 1 thread(s), 2400 steps" in text
    figures = {"protocol": text, "own_weights": {"ndsm": 67.3, "optical": 26.6},
               "subsets": {"ndsm": {"miou": 53.2, "per_class": {"1": 91.1}, "pixels": 10, "classes_in_miou": [1]}}}
    held_out.store_metrics(package, {"held_out": figures})
    assert held_out.states_seen_in_training(load_package(folder))  # the int8 cost is measured as seen
    card = (folder / "README.md").read_text()
    assert ("The shipped weights' own mIoU on the same areas, optimistic because they trained on part of the "
            "LiDAR tiles: ndsm 67.3, optical 26.6.") in card


def test_several_seeds_store_their_mean_and_spread():
    def run(miou, building):
        row = {"miou": miou, "per_class": {"1": 90.0, "2": building}, "pixels": 10, "classes_in_miou": [1, 2]}
        return {"protocol": "p", "subsets": {"ndsm": row}, "groups": {"2 m tiles": {"ndsm": row}}}

    mean = held_out.mean_over_seeds([run(53.2, 43.1), run(55.2, 46.9)])
    for row in (mean["subsets"]["ndsm"], mean["groups"]["2 m tiles"]["ndsm"]):
        assert row["miou"] == 54.2 and row["spread"] == 1.0 and row["seeds"] == [53.2, 55.2]
        assert row["per_class"] == {"1": 90.0, "2": 45.0} and row["pixels"] == 10


def test_seeds_of_a_package_trained_without_the_held_out_set_are_its_own_figures(tmp_path):
    """``--seed-run``: the shipped weights are one of the runs averaged; nothing says they saw the
    tiles, and the card names the shipped run's own figures without calling them optimistic."""
    folder = tmp_path / DEFAULT.name
    shutil.copytree(DEFAULT, folder)
    package = load_package(folder)
    text = held_out.seeds_protocol(held_out.protocol([], False), [package, package])
    assert "none of these areas is trained on" in text and "the mean of 2 runs of the package's recipe" in text
    assert "CAUTION" not in text and "twin" not in text
    figures = {"protocol": text, "own_weights": {"ndsm": 55.5}, "own_weights_seen": False,
               "subsets": {"ndsm": {"miou": 54.9, "spread": 0.6, "per_class": {"1": 91.1}, "pixels": 10,
                                    "classes_in_miou": [1]}}}
    held_out.store_metrics(package, {"held_out": figures})
    assert not held_out.states_seen_in_training(load_package(folder))
    card = (folder / "README.md").read_text()
    assert "| all, pooled | ndsm | 91.1 |" in card and "**54.9** ± 0.6" in card
    assert ("The table is the mean over seeds of this recipe, every run trained without these areas. The shipped "
            "weights are one of those runs; their own mIoU: ndsm 55.5.") in card
    assert "optimistic" not in card.split("The table is the mean")[1].split("\n")[0]
