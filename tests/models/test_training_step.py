"""Each network's training step (``training_loss``): it learns, and its terms are the paper's."""
import math

import pytest
import torch

from modalseg.models.derived import build_derived
from modalseg.models.networks.registry import build_network
from modalseg.models.nn.losses import LossSettings, ce_loss, hard_pixel_aux_ce, hard_pixel_ce, kl_alignment
from modalseg.models.nn.strategies import mcrm_masking
from modalseg.models.networks._base import TrainingBatch
from tests.models.tiny_networks import ARCHITECTURES, network_config, synthetic_batch

torch.set_num_threads(1)


def _net(architecture):
    torch.manual_seed(0)
    return build_network(architecture, network_config(architecture))


def _close(a, b):
    a, b = (float(x.detach()) if torch.is_tensor(x) else float(x) for x in (a, b))
    assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), (a, b)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_training_loss_decreases_on_a_fixed_batch(architecture):
    net, batch = _net(architecture).train(), synthetic_batch(architecture)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(12):
        loss, terms = net.training_loss(batch)
        assert math.isclose(loss.item(), sum(terms.values()), rel_tol=1e-5), terms  # the log adds up
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) < 0.85 * sum(losses[:3]), losses


def test_emsnet_is_class_weighted_ce_plus_the_recipes_hard_pixel_term():
    net, batch = _net("emsnet").eval(), synthetic_batch("emsnet")
    weights = [1.0, 2.0, 1.0, 1.0, 1.0, 3.0]
    settings = LossSettings(class_weights=weights, hard_pixel_keep=0.5, hard_pixel_weight=0.7)
    loss, terms = net.training_loss(batch, settings)
    logits = net(batch.inputs, batch.present)["logits"]
    assert set(terms) == {"ce", "hard_pixel"}
    _close(terms["ce"], ce_loss(logits, batch.target, class_weights=weights))
    _close(terms["hard_pixel"], 0.7 * hard_pixel_ce(logits, batch.target, 0.5, class_weights=weights))
    _close(loss, terms["ce"] + terms["hard_pixel"])


def test_asanet_adds_its_auxiliary_head_at_0_4():
    net, batch = _net("asanet").eval(), synthetic_batch("asanet")
    loss, terms = net.training_loss(batch)
    out = net.forward_train(batch.inputs, batch.present)
    assert set(terms) == {"ce", "aux_ce"}
    _close(loss, ce_loss(out["logits"], batch.target) + 0.4 * ce_loss(out["aux_logits"], batch.target))
    _, without = net.training_loss(batch, LossSettings(terms={"aux_weight": 0.0}))
    assert set(without) == {"ce"}


def test_ammnet_aligns_the_streams_only_where_both_are_present():
    net, batch = _net("ammnet").eval(), synthetic_batch("ammnet")
    loss, terms = net.training_loss(batch)
    out = net.forward_train(batch.inputs, batch.present)
    _close(terms["alignment"], 0.1 * sum(kl_alignment(a, b) for a, b in out["da_pairs"]))
    _close(loss, ce_loss(out["logits"], batch.target) + terms["alignment"])
    present = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    _, terms = net.training_loss(TrainingBatch(batch.inputs, present, batch.target))
    out = net.forward_train(batch.inputs, present)
    _close(terms["alignment"], 0.1 * sum(kl_alignment(a[1:2], b[1:2]) for a, b in out["da_pairs"]))
    pick = [0, 3]
    _, terms = net.training_loss(TrainingBatch({m: x[pick] for m, x in batch.inputs.items()}, present[pick],
                                               batch.target[pick]))
    assert set(terms) == {"ce"}  # no sample with both streams: nothing to align


def test_sgma_dual_path_weights_and_the_recipes_switch():
    net, batch = _net("sgma").eval(), synthetic_batch("sgma")
    torch.manual_seed(5)  # MAS draws the modality each sample is trained alone on
    loss, terms = net.training_loss(batch)
    torch.manual_seed(5)
    out = net.forward_train(batch.inputs, batch.present, mas=True)
    _close(loss, 2.0 * ce_loss(out["logits"], batch.target) + ce_loss(out["mas_logits"], batch.target))
    loss, _ = net.training_loss(batch, LossSettings(terms={"mas": False}))
    _close(loss, ce_loss(net(batch.inputs, batch.present)["logits"], batch.target))
    with pytest.raises(ValueError, match="SGMA has no loss term lambda"):
        net.training_loss(batch, LossSettings(terms={"lambda": [1, 1]}))


def test_mobanet_masks_one_modality_and_supervises_its_heads_on_hard_pixels():
    net, batch = _net("mobanet").eval(), synthetic_batch("mobanet", n=8)
    torch.manual_seed(7)
    loss, terms = net.training_loss(batch)
    torch.manual_seed(7)
    masked = mcrm_masking(dict(batch.inputs), net.modalities, 0.25)
    assert sum(int((masked[m] != batch.inputs[m]).flatten(1).any(1).sum()) for m in net.modalities) == 2
    out = net.forward_train(masked, batch.present)
    assert set(terms) == {"ce", "hard_aux_ce"}
    _close(loss, ce_loss(out["logits"], batch.target)
           + 0.01 * hard_pixel_aux_ce(out["logits"], out["aux_logits"], batch.target))
    net.train()
    net.training_loss(batch)[0].backward()
    assert net.aux_heads[1].body[-1].weight.grad is not None  # the training-only heads learn
    assert all(p.grad is None for p in net.vit.parameters())  # the shared backbone stays frozen


def test_derived_inputs_pass_the_inner_networks_step_through():
    inner = network_config("asanet")
    net = build_derived({"inner_architecture": "asanet", "derive": {}, "num_classes": 6,
                         "modalities": inner.pop("modalities"), "inner_config": inner}).eval()
    batch = synthetic_batch("asanet")
    loss, terms = net.training_loss(batch)
    assert set(terms) == {"ce", "aux_ce"}
    _close(loss, net.inner.training_loss(batch)[0])
    assert net.encoder_modules == ("inner.streams",)
    with pytest.raises(ValueError, match="ASANet has no loss term mas"):
        net.terms(LossSettings(terms={"mas": False}))
