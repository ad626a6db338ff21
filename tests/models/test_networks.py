"""SGMA + registry: forward/backward at two sizes, every modality subset, robustness, ONNX parity.

The helpers here (``make_inputs``, ``subsets``, ``check_onnx_parity``) are reused by the other
``test_networks_*`` files.
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from modalseg.models.networks import ARCHITECTURES, build_network  # noqa: E402

SGMA_CFG = {"modalities": {"optical": 3, "ndsm": 1, "sar": 1}, "num_classes": 6}


def make_inputs(net, batch: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, c, size, size, generator=g) for m, c in net.in_channels.items()}


def subsets(k: int) -> list[tuple[int, ...]]:
    """Every non-empty subset of range(k), as 0/1 tuples."""
    return [s for s in itertools.product((0, 1), repeat=k) if any(s)]


def apply_subset(inputs, net, subset):
    present = torch.tensor([subset], dtype=torch.float32).repeat(next(iter(inputs.values())).shape[0], 1)
    zeroed = {m: inputs[m] * present[:, i].reshape(-1, 1, 1, 1) for i, m in enumerate(net.modalities)}
    return zeroed, present


class _Wrapped(torch.nn.Module):
    """What the exporter does: positional modality tensors + presence vector → tuple of outputs."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, *args):
        *xs, present = args
        out = self.net(dict(zip(self.net.modalities, xs)), present)
        return (out["logits"], out["robustness"]) if self.net.has_robustness else (out["logits"],)


def check_onnx_parity(net, tmp_path, export_size: int = 64, run_sizes=(64, 96), batch: int = 2,
                      tol: float = 1e-3) -> None:
    ort = pytest.importorskip("onnxruntime")
    net.eval()
    wrapped = _Wrapped(net).eval()  # export restores the wrapper's mode recursively: keep it eval
    names = list(net.modalities) + ["present"]
    outs = ["logits", "robustness"] if net.has_robustness else ["logits"]
    ex = make_inputs(net, 1, export_size)
    args = tuple(ex[m] for m in net.modalities) + (torch.ones(1, len(net.modalities)),)
    dyn = {m: {0: "batch", 2: "height", 3: "width"} for m in net.modalities}
    dyn["present"] = {0: "batch"}
    for o in outs:
        dyn[o] = {0: "batch", 2: "height", 3: "width"}
    path = tmp_path / "net.onnx"
    with torch.no_grad():
        torch.onnx.export(wrapped, args, str(path), input_names=names, output_names=outs,
                          dynamic_axes=dyn, opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    k = len(net.modalities)
    for size in run_sizes:
        inputs = make_inputs(net, batch, size, seed=size)
        for subset in (tuple([1] * k), tuple([1] + [0] * (k - 1)), tuple([0] * (k - 1) + [1])):
            zeroed, present = apply_subset(inputs, net, subset)
            feed = {m: zeroed[m].numpy() for m in net.modalities}
            feed["present"] = present.numpy()
            got = sess.run(outs, feed)
            with torch.no_grad():
                ref = net(zeroed, present)
            for name, arr in zip(outs, got):
                diff = float(np.abs(arr - ref[name].numpy()).max())
                assert diff <= tol, f"{name} differs by {diff} at size {size}, subset {subset}"


def check_forward_backward(net, sizes=(64, 96), batch: int = 2) -> None:
    net.train()
    for size in sizes:
        inputs = make_inputs(net, batch, size)
        zeroed, present = apply_subset(inputs, net, tuple([1] * len(net.modalities)))
        out = net(zeroed, present)
        assert out["logits"].shape == (batch, net.num_classes, size, size)
        assert torch.isfinite(out["logits"]).all()
        net.zero_grad()
        out["logits"].mean().backward()
        grads = [p.grad for p in net.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads)


def check_contract(net) -> None:
    assert isinstance(net.modalities, tuple) and net.modalities
    assert set(net.in_channels) == set(net.modalities)
    assert isinstance(net.has_robustness, bool)
    assert net.size_multiple % 32 == 0 or 32 % net.size_multiple == 0
    json.dumps(net.config)  # JSON-able


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[0, 16], ids=["paper-head", "full-res-refiner"])
def sgma(request):
    torch.manual_seed(0)
    return build_network("sgma", {**SGMA_CFG, "refine_dim": request.param})


def test_registry_lists_all_five():
    assert set(ARCHITECTURES) == {"sgma", "emsnet", "ammnet", "asanet", "mobanet"}
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network("nope", SGMA_CFG)


def test_sgma_contract_and_config_roundtrip(sgma):
    check_contract(sgma)
    assert sgma.modalities == ("optical", "ndsm", "sar")
    assert sgma.has_robustness
    again = build_network("sgma", json.loads(json.dumps(sgma.config)))
    again.load_state_dict(sgma.state_dict())


def test_sgma_forward_backward_two_sizes(sgma):
    check_forward_backward(sgma)


def test_sgma_every_subset_robustness(sgma):
    sgma.eval()
    inputs = make_inputs(sgma, 2, 64)
    for subset in subsets(3):
        zeroed, present = apply_subset(inputs, sgma, subset)
        with torch.no_grad():
            out = sgma(zeroed, present)
        r = out["robustness"]
        assert out["logits"].shape == (2, 6, 64, 64) and torch.isfinite(out["logits"]).all()
        assert r.shape == (2, 3, 64, 64) and (r >= 0).all()
        torch.testing.assert_close(r.sum(1), torch.ones(2, 64, 64), atol=1e-5, rtol=0)
        for i, on in enumerate(subset):
            if not on:
                assert r[:, i].abs().max() == 0
        if sum(subset) == 1:
            torch.testing.assert_close(r[:, subset.index(1)], torch.ones(2, 64, 64), atol=1e-5, rtol=0)


def test_sgma_absent_modality_values_do_not_matter(sgma):
    """An absent modality's content must not change the output (masking, not zero-reliance)."""
    sgma.eval()
    inputs = make_inputs(sgma, 1, 64)
    _, present = apply_subset(inputs, sgma, (1, 1, 0))
    noisy = dict(inputs, sar=inputs["sar"] * 100 + 5)
    with torch.no_grad():
        a = sgma(inputs, present)["logits"]
        b = sgma(noisy, present)["logits"]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_sgma_forward_train_mas(sgma):
    sgma.train()
    inputs = make_inputs(sgma, 2, 64)
    present = torch.ones(2, 3)
    out = sgma.forward_train(inputs, present, generator=torch.Generator().manual_seed(1))
    assert out["mas_logits"].shape == out["logits"].shape == (2, 6, 64, 64)
    assert len(out["robustness_scales"]) == 4 and len(out["mas_choices"]) == 4
    for c in out["mas_choices"]:
        torch.testing.assert_close(c.sum(1), torch.ones(2))
    (2 * out["logits"].mean() + out["mas_logits"].mean()).backward()


def test_sgma_onnx_parity_dynamic_size(sgma, tmp_path):
    check_onnx_parity(sgma, tmp_path, export_size=64, run_sizes=(64, 96))


def _poke_locality(refine_dim: int) -> float:
    """Mean logit change within 2 px of a one-pixel nDSM poke over the mean in the 3-6 px ring."""
    torch.manual_seed(0)
    net = build_network("sgma", {**SGMA_CFG, "refine_dim": refine_dim}).eval()
    inputs = make_inputs(net, 1, 64)
    poked = {k: v.clone() for k, v in inputs.items()}
    poked["ndsm"][0, :, 30, 30] += 50.0
    present = torch.ones(1, 3)
    with torch.no_grad():
        diff = (net(poked, present)["logits"] - net(inputs, present)["logits"]).abs().sum(1)[0]
    inner = diff[28:33, 28:33]
    ring_sum = diff[24:37, 24:37].sum() - inner.sum()
    return float(inner.mean() / (ring_sum / (13 * 13 - 25)))


def test_sgma_refiner_keeps_full_resolution_detail():
    """The stride-4 head spreads a one-pixel change over its cells; the refiner keeps it local."""
    coarse, refined = _poke_locality(0), _poke_locality(16)
    assert refined > 3 * coarse, (coarse, refined)


def test_sgma_two_modality_bundle_size():
    net = build_network("sgma", {"modalities": {"optical": 3, "ndsm": 1}, "num_classes": 6})
    assert sum(p.numel() for p in net.parameters()) <= 1_500_000
