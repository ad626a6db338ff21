"""The OMBRIA flood chips as training data (models.data.ombria) and the flood recipe's sampler:
every chip found with its layers, masks read as land 1 / water 5, a seeded validation share of
train/ that test/ never enters, chips normalised by their own percentiles."""
import numpy as np
import pytest

from modalseg.models.data.chips import ChipSampler
from modalseg.models.data.augment import display_scaling
from modalseg.models.data.ombria import LAND, OMBRIA_GSD, WATER, find_ombria_chips, validation_split
from modalseg.models.train import build_areas, held_out_areas, load_config
from tests.fixtures.paths import REPO_ROOT

RECIPE = REPO_ROOT / "training" / "flood_s1s2.json"


@pytest.fixture(scope="module")
def ombria(shared_data):
    return shared_data / "ombria_s1s2"


def test_every_chip_is_found_with_its_layers_and_its_mask_as_class_values(ombria):
    train = find_ombria_chips(ombria / "train", ("s1_after", "s2_after"))
    test = find_ombria_chips(ombria / "test")
    assert len(train) == 624 and len(test) == 70
    chip = test[0]
    assert chip.width == chip.height == 256 and chip.gsd == OMBRIA_GSD
    assert sorted(chip.files) == ["s1_after", "s1_before", "s2_after"]
    sar, valid = chip.read("s1_after")
    optical, _ = chip.read("s2_after")
    assert sar.shape == (1, 256, 256) and optical.shape == (3, 256, 256) and valid.all()
    from osgeo import gdal
    ds = gdal.Open(str(chip.label))
    mask = ds.ReadAsArray()
    ds = None
    label = chip.read_label()
    assert set(np.unique(label).tolist()) <= {LAND, WATER}
    assert np.array_equal(label == WATER, mask == 255)
    assert 0.05 < np.mean([(c.read_label() == WATER).mean() for c in test]) < 0.6  # ~33 % water
    with pytest.raises(ValueError, match="OMBRIA has no layer \\['s2_before'\\]"):
        find_ombria_chips(ombria / "train", ("s2_before",))


def test_validation_is_a_seeded_share_of_train_and_test_stays_out(ombria):
    chips = find_ombria_chips(ombria / "train", ("s1_after", "s2_after"))
    train, val = validation_split(chips, 0.1, seed=0)
    assert len(val) == 62 and len(train) == 562
    names = lambda areas: {a.stack.name for a in areas}  # noqa: E731
    assert not names(train) & names(val)
    assert names(validation_split(chips, 0.1, seed=0)[1]) == names(val)
    assert names(validation_split(chips, 0.1, seed=1)[1]) != names(val)
    cfg = load_config(RECIPE)
    train_areas, val_areas, weights, groups = build_areas(cfg)
    assert names(train_areas) == names(train) and names(val_areas) == names(val)
    assert np.isclose(sum(weights), 1.0) and set(groups) == {"ombria"}
    held = held_out_areas(cfg)
    assert len(held) == 70 and all(n.startswith("test/") for n in names(held))
    assert not names(held) & (names(train_areas) | names(val_areas))


def test_recipe_chips_are_normalised_by_their_own_percentiles(ombria):
    cfg = load_config(RECIPE)
    train_areas, _, _, _ = build_areas(cfg)
    mods = [m["name"] for m in cfg["modalities"]]
    sampler = ChipSampler(train_areas[:20], mods, {m["name"]: m["bands"] for m in cfg["modalities"]},
                          {m["name"]: m["source"] for m in cfg["modalities"]},
                          {m["name"]: m["normalization"] for m in cfg["modalities"]}, [1, 5], chip=128,
                          gsd_range=(10.0, 20.0), display_modalities=("optical", "sar"))
    batch = sampler.batch(6, np.random.default_rng(0))
    assert batch["optical"].shape == (6, 3, 128, 128) and batch["sar"].shape == (6, 1, 128, 128)
    assert set(np.unique(batch["label"]).tolist()) <= {0, 1, 255}
    for name in ("optical", "sar"):
        for i in range(6):
            x = batch[name][i]
            if batch["present"][i, mods.index(name)]:
                # 2-98 % percentiles of the chip -> 0-1, clipped: both ends are reached
                assert x.min() == 0.0 and x.max() == 1.0, (name, i)
                assert 0.01 < (x == 1.0).mean() < 0.2
            else:
                assert not x.any()


def test_display_scaling_is_monotone_and_keeps_the_range():
    rng = np.random.default_rng(3)
    x = np.linspace(0, 255, 256, dtype=np.float32).reshape(1, 1, 256)
    for _ in range(20):
        y = display_scaling(x, rng, (0.5, 2.0))
        assert y.min() == 0.0 and y.max() == 255.0
        assert (np.diff(y[0, 0]) >= 0).all()
