"""MoBaNet: frozen shared tiny ViT + CPIA + DGFM, ONNX parity, PEFT counts (its MCRM training step:
test_training_step)."""
from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

from modalseg.models.networks import build_network  # noqa: E402
from modalseg.models.nn.fusion import DGFM  # noqa: E402
from modalseg.models.nn.interaction import CPIA  # noqa: E402
from test_networks import (apply_subset, check_contract, check_forward_backward,  # noqa: E402
                           check_onnx_parity, make_inputs, subsets)

CFG = {"modalities": {"optical": 3, "dsm": 1}, "num_classes": 6}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_network("mobanet", CFG)


def test_contract_and_frozen_backbone(net):
    check_contract(net)
    assert all(not p.requires_grad for p in net.vit.parameters())
    assert net.aux_embed.proj.weight.requires_grad
    assert net.trainable_parameters() > net.trainable_parameters(include_aux_heads=False)


def test_forward_backward_two_sizes(net):
    check_forward_backward(net)


def test_every_subset_robustness(net):
    net.eval()
    inputs = make_inputs(net, 2, 64)
    for subset in subsets(2):
        zeroed, present = apply_subset(inputs, net, subset)
        with torch.no_grad():
            r = net(zeroed, present)["robustness"]
        torch.testing.assert_close(r.sum(1), torch.ones(2, 64, 64), atol=1e-5, rtol=0)
        for i, on in enumerate(subset):
            if not on:
                assert r[:, i].abs().max() == 0


def test_onnx_parity_dynamic_size(net, tmp_path):
    check_onnx_parity(net, tmp_path, export_size=64, run_sizes=(64, 96))


def test_peft_module_counts_match_paper_vit_b():
    """MoBaNet's bookkeeping for DINOv2 ViT-B (D = 768), which the authors' code reproduces:
    4×CPIA = 2,082,048 and 4×(DGFM + LayerNorm) = 1,005,312 trainable parameters."""
    cpia = sum(p.numel() for p in CPIA(768, 0.25).parameters())
    dgfm = sum(p.numel() for p in DGFM(768, 96).parameters()) + 2 * 768
    assert 4 * cpia == 2_082_048
    assert 4 * dgfm == 1_005_312
