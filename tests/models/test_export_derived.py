"""Derived elevation inputs inside the graph: exact values, and they survive ONNX export."""
import math

import numpy as np
import pytest
import torch

from modalseg.engine.package import load_package
from modalseg.models.derived import FEATURES, DerivedInputs, elevation_features
from modalseg.models.export import base_metadata, export_package, load_weights
from modalseg.models.networks.registry import build_network

torch.set_num_threads(1)


def test_elevation_features_by_hand():
    flat = elevation_features(torch.full((1, 1, 12, 12), 4.0))[0]
    np.testing.assert_allclose(flat[0], math.log1p(4.0), rtol=1e-6)   # log height
    np.testing.assert_allclose(flat[1], 0.4, rtol=1e-6)               # h / 10
    np.testing.assert_allclose(flat[2:], math.log1p(1e-3), atol=1e-5)  # no roughness, no slope
    ramp = torch.arange(12.0).repeat(12, 1)[None, None]               # +1 m per pixel along x
    f = elevation_features(ramp)[0]
    np.testing.assert_allclose(f[4, 2:-2, 2:-2], math.log1p(1.0), atol=1e-4)  # Sobel slope = 1 m/px
    # 3x3 std of a ramp x, x+1, x+2 in rows: population std = sqrt(2/3)
    np.testing.assert_allclose(f[2, 3:-3, 3:-3], math.log1p(math.sqrt(2 / 3)), atol=1e-4)
    neg = elevation_features(torch.full((1, 1, 4, 4), -3.0))[0]       # below ground counts as 0
    np.testing.assert_allclose(neg[:2], 0.0, atol=1e-7)


def test_plane_roughness_of_elevation_v2_is_zero_on_any_plane_and_not_on_crowns():
    """v2's roughness (h minus its window mean, RMS over the window) ignores the pitch of a roof,
    which v1's standard deviation reads as roughness; the other three features are v1's."""
    plane = (torch.arange(32.0).repeat(32, 1) * 0.7 + torch.arange(32.0)[:, None] * 0.3 + 20.0)[None, None]
    v1, v2 = elevation_features(plane)[0], elevation_features(plane, "elevation_v2")[0]
    np.testing.assert_allclose(v2[2, 2:-2, 2:-2], math.log1p(1e-3), atol=1e-5)  # 3 x 3, away from the edges
    np.testing.assert_allclose(v2[3, 8:-8, 8:-8], math.log1p(1e-3), atol=1e-5)  # 9 x 9
    assert float(v1[2, 16, 16]) > 0.4  # v1: a pitched plane is rough
    np.testing.assert_array_equal(v1[[0, 1, 4]], v2[[0, 1, 4]])
    torch.manual_seed(0)
    crown = 10.0 + 0.5 * torch.rand(1, 1, 32, 32)  # +-0.25 m of leaves
    rough = elevation_features(crown, "elevation_v2")[0, 2, 2:-2, 2:-2]
    assert 0.08 < float(rough.mean()) < 0.2


def test_detail_ratio_of_elevation_v3_tells_a_layer_at_the_grid_from_an_enlarged_coarse_one():
    """v3's sixth channel: leaves at the network's pixel size keep detail at 3 px; the same crown
    averaged to 4 x 4 px cells and enlarged bilinearly back (what segment makes of a 2 m layer on a
    0.5 m grid) has little; flat ground gives 0. The first five channels are v1's."""
    torch.manual_seed(0)
    crown = 10.0 + 2.0 * torch.rand(1, 1, 96, 96)
    enlarged = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(crown, 4), scale_factor=4,
                                               mode="bilinear", align_corners=False)
    fine, coarse = (elevation_features(h, "elevation_v3")[0] for h in (crown, enlarged))
    assert fine.shape[0] == 6
    np.testing.assert_array_equal(fine[:5], elevation_features(crown)[0])
    middle = (slice(24, -24), slice(24, -24))
    assert float(fine[5][middle].mean()) > float(coarse[5][middle].mean()) + 0.5
    flat = elevation_features(torch.zeros(1, 1, 40, 40), "elevation_v3")[0, 5]
    np.testing.assert_allclose(flat, 0.0, atol=1e-6)


@pytest.mark.parametrize("kind", ["elevation_v1", "elevation_v2", "elevation_v3"])
def test_derived_network_exports_with_parity(tmp_path, kind):
    torch.manual_seed(0)
    net = DerivedInputs({"inner_architecture": "sgma", "derive": {"ndsm": kind},
                         "inner_config": {"backbone_widths": [8, 8, 16, 16], "head_dim": 16},
                         "modalities": {"optical": 3, "ndsm": 1}, "num_classes": 6}).eval()
    assert net.in_channels == {"optical": 3, "ndsm": 1} and net.inner.in_channels["ndsm"] == FEATURES[kind]
    identity = {"type": "meanstd", "mean": [0.0], "std": [1.0]}
    mods = [{"name": "optical", "kind": "optical", "bands": 3,
             "normalization": {"type": "meanstd", "mean": [0, 0, 0], "std": [1, 1, 1]}},
            {"name": "ndsm", "kind": "ndsm", "bands": 1, "normalization": identity}]
    path = export_package(net, base_metadata("d", mods, architecture="derived-inputs", description="",
                                             training_data="", size_multiple=32), tmp_path / "d")
    meta = load_package(path).metadata
    assert meta.extra["torch"]["architecture"] == "derived-inputs"
    assert meta.extra["torch"]["config"]["inner_config"]["head_dim"] == 16
    # rebuilt from the recorded config, the same weights give the same output
    again = build_network(meta.extra["torch"]["architecture"], meta.extra["torch"]["config"]).eval()
    assert isinstance(again, DerivedInputs)
    assert load_weights(again, path.with_suffix(".safetensors")) == []
    x = {"optical": torch.randn(1, 3, 64, 64), "ndsm": torch.rand(1, 1, 64, 64) * 20}
    with torch.no_grad():
        np.testing.assert_array_equal(net(x, torch.ones(1, 2))["logits"], again(x, torch.ones(1, 2))["logits"])
