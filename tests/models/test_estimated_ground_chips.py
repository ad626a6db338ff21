"""Estimated-DTM nDSM augmentation: the engine's ground filter on a real DSM, and the sampler feeding
it on the configured share of chips instead of the LiDAR nDSM."""
import numpy as np
import pytest

from modalseg.engine.ground import ground_surface, window_pixels
from modalseg.models.data.chips import Area, ChipSampler
from modalseg.models.data.estimated_ground import EstimatedGroundCache, estimated_ndsm
from modalseg.models.data.rasters import find_lidar_stacks

IDENTITY = {"type": "meanstd", "mean": [0.0], "std": [1.0]}


@pytest.fixture(scope="module")
def fields(shared_data):
    return find_lidar_stacks(shared_data / "lidarhd_fields", ("ndsm", "dsm"))[0]


def test_estimated_ndsm_is_the_engines_filter(fields):
    heights, valid = estimated_ndsm(fields, 40.0)
    dsm, dsm_ok = fields.read("dsm")
    dtm = ground_surface(np.where(dsm_ok, dsm[0], np.nan).astype(np.float32), fields.gsd, window_pixels(40.0, fields.gsd))
    ok = valid & np.isfinite(dtm)
    np.testing.assert_allclose(heights[0][ok], np.maximum(dsm[0] - dtm, 0.0)[ok], atol=1e-4)
    assert (heights[0][~valid] == 0).all() and (heights >= 0).all()
    lidar, lidar_ok = fields.read("ndsm")
    label = fields.read_label()
    both = valid & lidar_ok
    # close to the LiDAR nDSM on the ground, but not the same layer (what users with a DSM alone feed)
    assert np.median(np.abs(heights[0] - lidar[0])[both & (label == 1)]) < 0.1
    assert np.abs(heights[0] - lidar[0])[both].mean() > 0.01
    trees = both & (label == 4)
    assert np.median(heights[0][trees]) > 3.0  # the hedge / tree line stands out of the estimated ground


def _sampler(stack, share):
    area = Area(stack, (0, 0, stack.width, stack.height))
    return ChipSampler([area], ["ndsm"], {"ndsm": 1}, {"ndsm": "ndsm"}, {"ndsm": IDENTITY}, [1, 2, 3, 4, 5, 6],
                       chip=64, augment_geometry=False, estimated_ground=EstimatedGroundCache(40.0),
                       estimated_share=share, min_labelled=0.0)


def test_sampler_swaps_the_share_of_chips(fields):
    estimated, estimated_ok = estimated_ndsm(fields, 40.0)
    lidar, lidar_ok = fields.read("ndsm")
    estimated, lidar = estimated[0] * estimated_ok, np.where(lidar_ok, lidar[0], 0.0)  # nodata -> 0, as in chips

    def source_of(chip, rng_state):
        # the window the sampler drew: replay its first two integer draws (x, then y)
        rng = np.random.default_rng(rng_state)
        rng.choice(1, p=[1.0])
        xs = int(rng.integers(0, fields.width - 64 + 1))
        ys = int(rng.integers(0, fields.height - 64 + 1))
        win = (slice(ys, ys + 64), slice(xs, xs + 64))
        is_estimated, is_lidar = np.array_equal(chip[0], estimated[win]), np.array_equal(chip[0], lidar[win])
        if is_estimated == is_lidar:  # off the footprint both are zeros: such a chip tells nothing
            return "both" if is_estimated else "other"
        return "estimated" if is_estimated else "lidar"

    for share, expected in ((0.0, "lidar"), (1.0, "estimated")):
        sampler = _sampler(fields, share)
        for seed in range(6):
            chip = sampler._sample_once(np.random.default_rng(seed), None, None)["ndsm"]
            assert source_of(chip, seed) in (expected, "both"), (share, seed)
    sampler = _sampler(fields, 0.4)
    drawn = [source_of(sampler._sample_once(np.random.default_rng(s), None, None)["ndsm"], s) for s in range(60)]
    told = [d for d in drawn if d != "both"]
    assert set(told) == {"lidar", "estimated"} and len(told) > 30 and 0.2 < told.count("estimated") / len(told) < 0.6


def test_stack_without_dsm_keeps_its_ndsm(shared_data):
    stack = find_lidar_stacks(shared_data / "lidarhd_fields", ("ndsm",))[0]
    assert not EstimatedGroundCache(40.0).available(stack)
    lidar, ok = stack.read("ndsm")
    lidar = np.where(ok, lidar[0], 0.0)
    chip = _sampler(stack, 1.0)._sample_once(np.random.default_rng(0), None, None)["ndsm"]
    rng = np.random.default_rng(0)
    rng.choice(1, p=[1.0])
    xs, ys = int(rng.integers(0, stack.width - 63)), int(rng.integers(0, stack.height - 63))
    np.testing.assert_array_equal(chip[0], lidar[ys:ys + 64, xs:xs + 64])
