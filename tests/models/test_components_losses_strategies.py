"""Losses, training strategies and fusion/interaction blocks: behaviour on hand-made cases."""
from __future__ import annotations

import math

import torch

torch.set_num_threads(1)

from modalseg.models.nn import losses, strategies  # noqa: E402
from modalseg.models.nn.fusion import CFM, DGFM, SAGate  # noqa: E402
from modalseg.models.nn.interaction import APF, CPIA, SFM  # noqa: E402
from modalseg.models.nn.sgf import SemanticGuidedFusion  # noqa: E402


def test_ce_ignore_index_and_all_ignored():
    logits = torch.zeros(1, 4, 2, 2, requires_grad=True)
    target = torch.tensor([[[0, 255], [255, 255]]])
    assert math.isclose(float(losses.ce_loss(logits, target).detach()), math.log(4), rel_tol=1e-6)
    empty = losses.ce_loss(logits, torch.full((1, 2, 2), 255))
    assert float(empty) == 0.0
    empty.backward()


def test_hard_pixel_aux_only_wrong_pixels():
    target = torch.tensor([[[0, 1]]])
    fused = torch.tensor([[[[5.0, 5.0]], [[0.0, 0.0]]]])      # predicts 0 everywhere: pixel 1 wrong
    aux = torch.tensor([[[[0.0, 9.0]], [[0.0, -9.0]]]])        # wrong on pixel 1, right on pixel 0 logits tie
    loss = losses.hard_pixel_aux_ce(fused, [aux], target)
    expected = torch.nn.functional.cross_entropy(aux[..., 1:], target[..., 1:])
    assert math.isclose(float(loss), float(expected), rel_tol=1e-6)


def test_hard_pixel_ce_keeps_the_hardest_fraction():
    # four labelled pixels (one ignored) with increasing loss: keep=0.5 averages the two worst
    logits = torch.tensor([[[[4.0, 2.0, 0.0, -2.0, 9.0]], [[0.0, 0.0, 0.0, 0.0, 0.0]]]], requires_grad=True)
    target = torch.tensor([[[0, 0, 0, 0, 255]]])
    per_px = torch.nn.functional.cross_entropy(logits[..., :4], target[..., :4], reduction="none")[0, 0]
    loss = losses.hard_pixel_ce(logits, target, keep=0.5)
    assert math.isclose(float(loss), float(per_px[2:].mean()), rel_tol=1e-6)
    loss.backward()
    assert float(logits.grad[0, :, 0, :2].abs().sum()) == 0.0  # easy pixels get no gradient
    assert math.isclose(float(losses.hard_pixel_ce(logits, target, keep=1.0)),
                        float(losses.ce_loss(logits, target)), rel_tol=1e-6)
    w = [1.0, 3.0]  # class weights scale the per-pixel loss before ranking
    weighted = losses.hard_pixel_ce(logits, target, keep=0.25, class_weights=w)
    assert math.isclose(float(weighted), float(per_px[3]), rel_tol=1e-6)
    assert float(losses.hard_pixel_ce(logits, torch.full((1, 1, 5), 255))) == 0.0


def test_kl_alignment_zero_for_equal_and_positive_otherwise():
    a = torch.randn(2, 8, 4, 4)
    assert float(losses.kl_alignment(a, a)) < 1e-6
    assert float(losses.kl_alignment(a, torch.randn(2, 8, 4, 4))) > 0


def test_sgma_dual_path_weights():
    logits = torch.randn(1, 3, 4, 4)
    t = torch.randint(0, 3, (1, 4, 4))
    ce = float(losses.ce_loss(logits, t))
    assert math.isclose(float(losses.sgma_dual_path_ce(logits, logits, t)), 3 * ce, rel_tol=1e-5)


def test_mas_sample_prefers_fragile_and_skips_absent():
    g = torch.Generator().manual_seed(0)
    r = torch.zeros(400, 3, 2, 2)
    r[:, 0], r[:, 1] = 0.9, 0.1                  # modality 2 absent
    present = torch.tensor([[1.0, 1.0, 0.0]]).repeat(400, 1)
    pick = strategies.mas_sample(r, present, g)
    assert pick[:, 2].sum() == 0
    assert pick[:, 1].sum() > 300                # inverse robustness: 0.9 vs 0.1 weights


def test_mcrm_masking_counts():
    g = torch.Generator().manual_seed(0)
    x = {"rgb": torch.ones(12, 3, 32, 32), "dsm": torch.ones(12, 1, 32, 32)}
    out = strategies.mcrm_masking(x, ("rgb", "dsm"), generator=g)
    hit = {m: (out[m] == 0).flatten(1).any(1) for m in x}
    assert int(hit["rgb"].sum()) == 1 and int(hit["dsm"].sum()) == 2
    assert not (hit["rgb"] & hit["dsm"]).any()
    frac = (out["dsm"][hit["dsm"]] == 0).float().mean(dim=(1, 2, 3))
    assert ((frac > 0.05) & (frac < 0.4)).all()


def _p(v):
    return torch.tensor(v, dtype=torch.float32).reshape(-1, 1, 1, 1)


def test_two_input_blocks_pass_present_stream_through():
    a, b = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    pa, pb = _p([1, 0]), _p([0, 1])
    out, att = SAGate(8)(a, b, pa, pb)
    torch.testing.assert_close(out[0], a[0])
    torch.testing.assert_close(out[1], b[1])
    assert att[0, 1].abs().max() == 0 and att[1, 0].abs().max() == 0
    out, g = DGFM(8)(a, b, pa, pb)
    torch.testing.assert_close(out[0], a[0])
    torch.testing.assert_close(out[1], b[1])
    both = _p([1, 1])
    _, g = DGFM(8)(a, b, both, both)
    torch.testing.assert_close(g, torch.full_like(g, 0.5))  # zero-initialised gate
    sa, sb = SFM(8)(a, b, pa, pb)
    torch.testing.assert_close(sa[0], a[0])                 # partner absent: unchanged
    assert CFM(8)(a, b, both, both).shape == a.shape
    assert APF(8, attention=True)(a, b, both, both).shape == a.shape
    ta, tb = CPIA(8)(a.flatten(2).transpose(1, 2), b.flatten(2).transpose(1, 2), pa[:, :, :, 0], pb[:, :, :, 0])
    torch.testing.assert_close(tb[0], b.flatten(2).transpose(1, 2)[0])


def test_sgf_single_modality_weight_is_one_and_subset_invariance():
    torch.manual_seed(0)
    sgf = SemanticGuidedFusion(8, 16, 5, 3).eval()
    feats = [torch.randn(2, 8, 6, 6) for _ in range(3)]
    present = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    fused, r = sgf(feats, present)
    torch.testing.assert_close(r.sum(1), torch.ones(2, 6, 6))
    torch.testing.assert_close(r[1, 1], torch.ones(6, 6))
    feats2 = [feats[0], feats[1] * 50, feats[2]]             # absent content must not matter
    fused2, _ = sgf(feats2, present)
    torch.testing.assert_close(fused2[0], fused[0], atol=1e-5, rtol=0)


def test_distillation_counts_only_unlabelled_pixels_and_vanishes_on_agreement():
    torch.manual_seed(0)
    teacher = torch.randn(2, 4, 8, 8)
    target = torch.full((2, 8, 8), losses.IGNORE, dtype=torch.long)
    target[:, :4] = 1  # the top half is labelled
    assert float(losses.distillation_loss(teacher.clone(), teacher, target)) == 0.0
    student = torch.randn(2, 4, 8, 8, requires_grad=True)
    loss = losses.distillation_loss(student, teacher, target)
    assert float(loss.detach()) > 0
    loss.backward()
    assert float(student.grad[:, :, :4].abs().max()) == 0.0 and float(student.grad[:, :, 4:].abs().max()) > 0
    moved = student.detach().clone()
    moved[:, :, :4] += 10.0  # labelled pixels do not count
    assert math.isclose(float(losses.distillation_loss(moved, teacher, target)), float(loss.detach()), rel_tol=1e-6)
    assert float(losses.distillation_loss(student, teacher, torch.ones(2, 8, 8, dtype=torch.long))) == 0.0
    settings = losses.LossSettings(teacher_logits=teacher, distill_weight=2.0)
    assert math.isclose(float(settings.distillation(student, target).detach()), 2 * float(loss.detach()), rel_tol=1e-6)
    assert losses.LossSettings().distillation(student, target) is None
