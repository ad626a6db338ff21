"""Dual-stream networks (EMSNet, AMMNet, ASANet): contract, forward/backward, subsets, ONNX parity."""
from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

from modalseg.models.networks import build_network  # noqa: E402
from test_networks import (apply_subset, check_contract, check_forward_backward,  # noqa: E402
                           check_onnx_parity, make_inputs, subsets)

CFG = {"modalities": {"optical": 3, "ndsm": 1}, "num_classes": 6}
CFG_SAR = {"modalities": {"optical": 3, "sar": 1}, "num_classes": 6}


@pytest.fixture(scope="module", params=["emsnet", "ammnet", "asanet"])
def net(request):
    torch.manual_seed(0)
    return build_network(request.param, CFG_SAR if request.param == "asanet" else CFG)


def test_contract(net):
    check_contract(net)
    assert net.modalities[0] == "optical" and len(net.modalities) == 2


def test_forward_backward_two_sizes(net):
    check_forward_backward(net)


def test_every_subset_finite_and_robustness(net):
    net.eval()
    inputs = make_inputs(net, 2, 64)
    for subset in subsets(2):
        zeroed, present = apply_subset(inputs, net, subset)
        with torch.no_grad():
            out = net(zeroed, present)
        assert torch.isfinite(out["logits"]).all()
        if net.has_robustness:
            r = out["robustness"]
            assert r.shape == (2, 2, 64, 64) and (r >= 0).all()
            torch.testing.assert_close(r.sum(1), torch.ones(2, 64, 64), atol=1e-5, rtol=0)
            for i, on in enumerate(subset):
                if not on:
                    assert r[:, i].abs().max() == 0


def test_onnx_parity_dynamic_size(net, tmp_path):
    check_onnx_parity(net, tmp_path, export_size=64, run_sizes=(64, 96))


def test_wrong_modality_count_is_refused():
    with pytest.raises(ValueError, match="exactly 2"):
        build_network("emsnet", {"modalities": {"optical": 3}, "num_classes": 2})
