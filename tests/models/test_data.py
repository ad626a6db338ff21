"""Training data: aligned stacks, chips (labels, normalisation, absence, GSD), augmentation, synthetic scenes."""
import numpy as np
import pytest

from modalseg.engine.normalize import normalize
from modalseg.engine.package import Normalization
from modalseg.models.data import augment
from modalseg.models.data.chips import IGNORE, Area, ChipSampler, resample, resample_label, split_area
from modalseg.models.data.rasters import RasterStack, find_lidar_stacks
from modalseg.models.data.synthetic import (BUILDING, GROUND, LOW_VEG, WATER, synthetic_scene,
                                            write_scene)

OPT = Normalization("meanstd", mean=(100.0, 100.0, 100.0), std=(50.0, 50.0, 50.0))
NDSM = Normalization("minmax", min=(0.0,), max=(20.0,))


def test_synthetic_scene_is_consistent_and_seeded():
    s = synthetic_scene(128, seed=4)
    lab, ndsm, nir, sar = s["label"], s["ndsm"][0], s["nir"][0].astype(float), s["sar"][0]
    assert (ndsm[lab == BUILDING] >= 3.0).all()          # buildings are tall
    assert (ndsm[lab == GROUND] == 0).mean() > 0.99        # ground is flat (cars are "other")
    np.testing.assert_allclose(s["dsm"][0] - s["dtm"][0], ndsm, atol=1e-4)
    assert nir[lab == LOW_VEG].mean() > nir[lab == BUILDING].mean() + 60  # vegetation bright in NIR
    assert sar[lab == BUILDING].mean() > sar[lab == GROUND].mean() + 5
    if (lab == WATER).any():
        assert sar[lab == WATER].mean() < sar[lab == GROUND].mean() - 5
    again = synthetic_scene(128, seed=4)
    for k in s:
        np.testing.assert_array_equal(s[k], again[k])
    assert not np.array_equal(synthetic_scene(128, seed=5)["label"], lab)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    scene = synthetic_scene(96, seed=1)
    scene["label"][:5, :] = 0  # nodata rows must become IGNORE
    write_scene(folder, scene, "a")
    return RasterStack("a", {"rgb": folder / "a_rgb.tif", "ndsm": folder / "a_ndsm.tif"},
                       folder / "a_label.tif"), scene


def test_stack_reads_windows_and_rejects_misaligned(stack, tmp_path):
    st, scene = stack
    d, ok = st.read("rgb", 10, 20, 30, 16)
    np.testing.assert_array_equal(d, scene["rgb"][:, 20:36, 10:40].astype(np.float32))
    assert st.gsd == 0.5 and (st.width, st.height) == (96, 96)
    other = synthetic_scene(64, seed=2)
    write_scene(tmp_path, {"ndsm": other["ndsm"]}, "b", origin=(500001.0, 6600000.0))
    with pytest.raises(ValueError, match="grid"):
        RasterStack("x", {"rgb": st.files["rgb"], "ndsm": tmp_path / "b_ndsm.tif"})


def test_chip_values_labels_and_absence(stack):
    st, scene = stack
    sampler = ChipSampler([Area(st, (0, 0, 96, 96))], ["optical", "ndsm", "sar"],
                          {"optical": 3, "ndsm": 1, "sar": 1}, {"optical": "rgb", "ndsm": "ndsm"},
                          {"optical": OPT, "ndsm": {"type": "minmax", "min": [0], "max": [20]},
                           "sar": {"type": "meanstd", "mean": [-10], "std": [5]}},
                          [1, 2, 3, 4, 5, 6], chip=64, augment_geometry=False, min_labelled=0.0)
    rng = np.random.default_rng(0)
    s = sampler.sample(rng)
    np.testing.assert_array_equal(s["present"], [1, 1, 0])
    assert s["sar"].shape == (1, 64, 64) and not s["sar"].any()  # absent = zeros
    # find the window the sampler drew, then check exact values against the engine's maths
    rgb = scene["rgb"].astype(np.float32)
    hits = [(y, x) for y in range(33) for x in range(33)
            if np.allclose(normalize(rgb[:, y:y + 64, x:x + 64], np.ones((64, 64), bool), OPT), s["optical"])]
    assert len(hits) == 1
    y, x = hits[0]
    np.testing.assert_allclose(s["ndsm"][0], np.clip(scene["ndsm"][0, y:y + 64, x:x + 64] / 20, 0, 1), atol=1e-6)
    lab = scene["label"][y:y + 64, x:x + 64]
    expected = np.where(lab == 0, IGNORE, lab.astype(int) - 1)
    np.testing.assert_array_equal(s["label"], expected)


def test_modality_dropout_keeps_a_non_empty_subset(stack):
    st, _ = stack
    sampler = ChipSampler([Area(st, (0, 0, 96, 96))], ["optical", "ndsm"], {"optical": 3, "ndsm": 1},
                          {"optical": "rgb", "ndsm": "ndsm"}, {"optical": OPT, "ndsm": NDSM},
                          [1, 2, 3, 4, 5, 6], chip=32, drop_prob=1.0)
    b = sampler.batch(12, np.random.default_rng(1))
    assert b["present"].shape == (12, 2)
    np.testing.assert_array_equal(b["present"].sum(1), np.ones(12))  # always a proper subset here
    for i in range(12):
        for j, m in enumerate(["optical", "ndsm"]):
            if b["present"][i, j] == 0:
                assert not b[m][i].any()


def test_split_is_spatially_separate(stack):
    st, _ = stack
    train, val = split_area(st, 0.25, "right")
    assert train.window == (0, 0, 72, 96) and val.window == (72, 0, 96, 96)
    sampler = ChipSampler([val], ["ndsm"], {"ndsm": 1}, {"ndsm": "ndsm"}, {"ndsm": NDSM}, [1, 2, 3, 4, 5, 6],
                          chip=32, augment_geometry=False, min_labelled=0.0)
    rng = np.random.default_rng(0)
    for _ in range(5):  # the strip is 24 px wide: chips are padded with ignore, never read left of it
        s = sampler.sample(rng)
        assert (s["label"][:, 24:] == IGNORE).all()


def test_resampling():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    out, ok = resample(np.full((1, 8, 8), 7.0, np.float32), np.ones((8, 8), bool), 4)
    np.testing.assert_allclose(out, 7.0) and ok.all()
    up, _ = resample(x, np.ones((4, 4), bool), 8)
    assert up.shape == (1, 8, 8) and up.min() >= 0 and up.max() <= 15
    # nodata is a mask: a hole stays invalid instead of dragging values toward the fill
    valid = np.ones((8, 8), bool)
    valid[:4, :4] = False
    v, okv = resample(np.full((1, 8, 8), 5.0, np.float32), valid, 4)
    assert not okv[:2, :2].any() and okv[2:, 2:].all()
    np.testing.assert_allclose(v[0][okv], 5.0, atol=1e-5)
    lab = np.array([[1, 2], [3, 4]], np.uint8)
    np.testing.assert_array_equal(resample_label(lab, 4), np.kron(lab, np.ones((2, 2), np.uint8)))
    # rectangular areas (validation strips): rows and columns scale apart
    ramp = np.tile(np.arange(8, dtype=np.float32), (4, 1))[None]
    half, ok_half = resample(ramp, np.ones((4, 8), bool), (2, 4))
    assert half.shape == (1, 2, 4) and ok_half.all()
    np.testing.assert_allclose(half[0, 0], [0.5, 2.5, 4.5, 6.5], atol=1e-5)  # box means of column pairs
    np.testing.assert_array_equal(resample_label(lab, (2, 4)), np.repeat(lab, 2, axis=1))


def test_chips_are_upsampled_only_when_asked(stack):
    """A fixed-GSD recipe draws 0.25 m chips of 0.5 m data (as segment enlarges a coarse layer for a
    package whose range starts above it); by default chips are never finer than the data."""
    st, _ = stack
    kwargs = dict(chip=32, gsd_range=(0.25, 0.25), augment_geometry=False, min_labelled=0.0)
    args = ([Area(st, (0, 8, 96, 96))], ["ndsm"], {"ndsm": 1}, {"ndsm": "ndsm"}, {"ndsm": NDSM}, [1, 2, 3, 4, 5, 6])
    up = ChipSampler(*args, upsample=True, **kwargs).sample(np.random.default_rng(3))
    assert up["gsd"] == pytest.approx(0.25)
    np.testing.assert_array_equal(up["label"][::2, ::2], up["label"][1::2, 1::2])  # 2 x 2 blocks
    native = ChipSampler(*args, **kwargs).sample(np.random.default_rng(3))
    assert native["gsd"] == pytest.approx(0.5)


def test_coarsened_chips_are_block_averages_enlarged_and_keep_fine_labels(stack):
    """``data.coarsen``: a chip of 0.5 m data, coarsened to 2 m, holds the 4 x 4 block means of the
    data enlarged bilinearly (what segment makes of a 2 m layer on a 0.5 m network grid), while its
    label stays the fine one; the default draws no coarsened chip, and data as coarse as the range
    is never coarsened again."""
    st, scene = stack
    kwargs = dict(chip=32, augment_geometry=False, min_labelled=0.0)
    args = ([Area(st, (0, 8, 96, 96))], ["ndsm"], {"ndsm": 1}, {"ndsm": "ndsm"},
            {"ndsm": {"type": "meanstd", "mean": [0.0], "std": [1.0]}}, [1, 2, 3, 4, 5, 6])
    plain = ChipSampler(*args, **kwargs).sample(np.random.default_rng(5))
    coarse = ChipSampler(*args, coarsen_share=1.0, coarsen_gsd=(2.0, 2.0), **kwargs).sample(np.random.default_rng(5))
    np.testing.assert_array_equal(coarse["label"], plain["label"])  # the same window, fine labels
    fine = plain["ndsm"][0]
    blocks = fine.reshape(8, 4, 8, 4).mean(axis=(1, 3))
    # a block's centre lies amid the enlarged chip's pixels 4k+1 and 4k+2 of both axes
    enlarged = coarse["ndsm"][0]
    centres = sum(enlarged[a::4, b::4] for a in (1, 2) for b in (1, 2)) / 4
    assert np.ptp(fine) > 0.1  # the window holds relief
    # exact where a block's neighbours are level with it, within a few percent of the relief elsewhere
    np.testing.assert_allclose(centres[1:-1, 1:-1], blocks[1:-1, 1:-1], atol=0.05 * np.ptp(fine))
    assert np.abs(coarse["ndsm"].mean() - plain["ndsm"].mean()) < 0.02 * np.ptp(fine)
    assert np.abs(np.diff(coarse["ndsm"][0], axis=1)).mean() < 0.6 * np.abs(np.diff(fine, axis=1)).mean()
    as_coarse = ChipSampler(*args, coarsen_share=1.0, coarsen_gsd=(0.5, 1.0), **kwargs).sample(np.random.default_rng(5))
    np.testing.assert_array_equal(as_coarse["ndsm"], plain["ndsm"])


def test_gsd_drawn_per_sample(stack):
    st, scene = stack
    sampler = ChipSampler([Area(st, (0, 0, 96, 96))], ["ndsm"], {"ndsm": 1}, {"ndsm": "ndsm"},
                          {"ndsm": NDSM}, [1, 2, 3, 4, 5, 6], chip=32, gsd_range=(0.5, 1.5))
    b = sampler.batch(16, np.random.default_rng(2))
    assert b["gsd"].min() >= 0.5 and b["gsd"].max() <= 1.5 and b["gsd"].std() > 0.1  # mixed in a batch


def test_height_scale_jitters_ndsm_only(stack):
    st, scene = stack
    args = ([Area(st, (0, 0, 96, 96))], ["optical", "ndsm"], {"optical": 3, "ndsm": 1},
            {"optical": "rgb", "ndsm": "ndsm"},
            {"optical": OPT, "ndsm": {"type": "meanstd", "mean": [0.0], "std": [1.0]}}, [1, 2, 3, 4, 5, 6])
    plain = ChipSampler(*args, chip=32, augment_geometry=False).sample(np.random.default_rng(3))
    doubled = ChipSampler(*args, chip=32, augment_geometry=False, height_scale=(2.0, 2.0)).sample(
        np.random.default_rng(3))
    assert plain["ndsm"].max() > 0  # no augmentation at all (evaluation-like): no jitter either
    np.testing.assert_allclose(doubled["ndsm"], plain["ndsm"])
    on = ChipSampler(*args, chip=32, height_scale=(2.0, 2.0)).sample(np.random.default_rng(3))
    off = ChipSampler(*args, chip=32).sample(np.random.default_rng(3))
    np.testing.assert_allclose(on["ndsm"], 2 * off["ndsm"], rtol=1e-5)
    np.testing.assert_array_equal(on["label"], off["label"])


def test_geometric_augmentation_is_joint_and_photometric_optical_only():
    rng = np.random.default_rng(0)
    img = rng.random((3, 8, 8)).astype(np.float32)
    label = (img[0] > 0.5).astype(np.uint8)
    for seed in range(6):
        layers, lab = augment.geometric({"optical": img, "ndsm": img[:1] * 2}, label, np.random.default_rng(seed))
        np.testing.assert_array_equal(lab, (layers["optical"][0] > 0.5).astype(np.uint8))
        np.testing.assert_allclose(layers["ndsm"][0], layers["optical"][0] * 2)
    out = augment.photometric(img * 255, rng)
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 255
    assert not np.allclose(out, img * 255)


def test_real_lidar_folders_are_aligned_stacks(shared_data):
    houses = find_lidar_stacks(shared_data / "lidarhd_houses", ("rgb", "ndsm"))
    elev = find_lidar_stacks(shared_data / "lidarhd_elevation", ("rgb", "ndsm"))
    assert len(houses) == 1 and sorted(houses[0].files) == ["ndsm", "rgb"]
    assert len(elev) == 14 and all(list(s.files) == ["ndsm"] for s in elev)  # no optical there
    assert sorted({s.gsd for s in elev}) == [0.5, 2.0]
    lab = houses[0].read_label()
    assert set(np.unique(lab)) <= {0, 1, 2}  # houses: only ground and building labelled
