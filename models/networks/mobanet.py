"""MoBaNet: parameter-efficient modality-balanced symmetric fusion, tiny version.

Paper: Li, Zheng, Miao, Lu, Cai, Fu & Huang, "Parameter-Efficient Modality-Balanced Symmetric Fusion
for Multimodal Remote Sensing Semantic Segmentation" (arXiv 2603.17705, 2026). Specified by the
paper and its authors' code: one frozen ViT shared by both streams, the optical stream on its frozen
patch embedding and the auxiliary one on a trainable copy, a Cross-modal Prompt-Injected Adapter
before and a Difference-Guided Gated Fusion after each of 4 stages, a UPerNet decoder, and MCRM
training (ρ = 0.25 of each batch masked on one modality, λ = 0.01 on the modality heads' CE over the
pixels the fused head gets wrong).

Composition: one *shared, frozen* ``TinyViT`` (built without weights; see ``nn/vit.py`` for the
DINOv2 weights a user would load) run on both streams; the optical stream uses the backbone's
(frozen) patch embedding, the auxiliary stream its own trainable one. Before each of the 4
stages a ``CPIA`` (code form: CPG + TFT) modulates both token streams; after each stage the
frozen final LayerNorm is applied and a ``DGFM`` fuses the two; a trainable LayerNorm + 1×1
conv projects to ``proj_dim``; a UPerHead (64 channels) decodes the 4 same-resolution taps.
Two training-only FCN auxiliary heads on the stage-1 projected streams feed MCRM's hard-pixel
loss (``forward_train``: ``aux_logits`` = [optical, aux]); ``training_loss`` masks with
``strategies.mcrm_masking`` first.

ModalSeg's choices: ``freeze_backbone`` (default True, as in the paper; set False to train the random
tiny ViT from scratch on CPU, which is the only sensible use without real weights); patch 16
(SAM-style) so ``size_multiple`` = 32 (DINOv2's 14 would need multiples of 14·2); the auxiliary
patch embedding is initialised from the optical one averaged over its input channels.

Robustness (``has_robustness = True``): DGFM's gate G (optical weight; auxiliary 1−G, both
presence-aware) averaged over channels, over the 4 taps, and upsampled ×patch — a per-pixel
share between the two streams that sums to 1 over present modalities.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..nn.common import expand_presence, upsample
from ..nn.decoders import UPerHead
from ..nn.fusion import DGFM
from ..nn.heads import FCNHead
from ..nn.interaction import CPIA
from ..nn.losses import LossSettings, hard_pixel_aux_ce
from ..nn.norms import LayerNorm2d
from ..nn.strategies import mcrm_masking
from ..nn.streams import ordered_inputs
from ..nn.vit import PatchEmbed, TinyViT
from ._base import SegNetwork, TrainingBatch, segmentation_loss

DEFAULTS: dict[str, Any] = {
    "vit_dim": 96,
    "vit_depth": 4,
    "vit_heads": 3,
    "patch": 16,
    "taps": None,
    "freeze_backbone": True,
    "peft_ratio": 0.25,
    "cpia_adapter": False,
    "proj_dim": 64,
    "decoder_channels": 64,
    "aux_channels": 32,
    "dropout": 0.1,
}


class MoBaNet(SegNetwork):
    defaults = DEFAULTS
    modality_count = 2
    size_multiple = 32
    has_robustness = True
    # MCRM: share ρ of each batch masked (one modality per sample), λ on the hard-pixel aux CE
    loss_terms = {"mcrm_ratio": 0.25, "hard_aux_weight": 0.01}
    encoder_modules = ("vit", "aux_embed")

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        cfg = self.config
        c_main, c_aux = (self.in_channels[m] for m in self.modalities)
        d, p = int(cfg["vit_dim"]), int(cfg["patch"])
        if 32 % p:
            raise ValueError(f"patch {p} must divide 32 (the network's size multiple)")
        self.patch = p
        taps = tuple(cfg["taps"]) if cfg["taps"] else None
        self.vit = TinyViT(c_main, d, int(cfg["vit_depth"]), int(cfg["vit_heads"]), p, taps)
        self.aux_embed = PatchEmbed(c_aux, d, p)
        with torch.no_grad():
            w = self.vit.patch_embed.proj.weight.mean(1, keepdim=True)
            self.aux_embed.proj.weight.copy_(w.repeat(1, c_aux, 1, 1))
            self.aux_embed.proj.bias.copy_(self.vit.patch_embed.proj.bias)
        if cfg["freeze_backbone"]:
            for prm in self.vit.parameters():
                prm.requires_grad_(False)
        n = len(self.vit.taps)
        self.cpia = nn.ModuleList(CPIA(d, float(cfg["peft_ratio"]), bool(cfg["cpia_adapter"])) for _ in range(n))
        self.dgfm = nn.ModuleList(DGFM(d, max(32, int(d * 0.125))) for _ in range(n))
        pd = int(cfg["proj_dim"])
        self.proj = nn.ModuleList(nn.Sequential(LayerNorm2d(d), nn.Conv2d(d, pd, 1)) for _ in range(n))
        self.decoder = UPerHead([pd] * n, [p] * n, self.num_classes, int(cfg["decoder_channels"]),
                                float(cfg["dropout"]))
        self.aux_heads = nn.ModuleList(FCNHead(pd, self.num_classes, p, int(cfg["aux_channels"])) for _ in range(2))

    def _run(self, inputs: Mapping[str, Tensor], present: Tensor):
        x_m, x_a = ordered_inputs(inputs, self.modalities)
        p_m, p_a = expand_presence(present, 0), expand_presence(present, 1)
        t_p_m, t_p_a = p_m.reshape(-1, 1, 1), p_a.reshape(-1, 1, 1)
        grid = self.vit.patch_embed(x_m)
        h, w = grid.shape[2], grid.shape[3]
        t_m = self.vit.tokens(grid) * t_p_m
        t_a = self.vit.tokens(self.aux_embed(x_a)) * t_p_a
        fused, gates, first = [], [], None
        for i, blocks in enumerate(self.vit.stage_blocks()):
            t_m, t_a = self.cpia[i](t_m, t_a, t_p_m, t_p_a)
            for blk in blocks:
                t_m, t_a = blk(t_m) * t_p_m, blk(t_a) * t_p_a
            f_m = self.vit.norm(t_m).transpose(1, 2).reshape(-1, self.vit.dim, h, w)
            f_a = self.vit.norm(t_a).transpose(1, 2).reshape(-1, self.vit.dim, h, w)
            f, g = self.dgfm[i](f_m, f_a, p_m, p_a)
            fused.append(self.proj[i](f))
            gates.append(g.mean(1, keepdim=True))
            if i == 0:
                first = (self.proj[i](f_m), self.proj[i](f_a))
        g = sum(gates) / len(gates)
        robustness = upsample(torch.cat([g, 1.0 - g], 1), self.patch)
        return fused, robustness, first

    def forward(self, inputs: Mapping[str, Tensor], present: Tensor) -> dict[str, Tensor]:
        fused, robustness, _ = self._run(inputs, present)
        return {"logits": self.decoder(fused), "robustness": robustness}

    def forward_train(self, inputs: Mapping[str, Tensor], present: Tensor) -> dict[str, Any]:
        fused, robustness, first = self._run(inputs, present)
        aux = [head(f) for head, f in zip(self.aux_heads, first)]
        return {"logits": self.decoder(fused), "robustness": robustness, "aux_logits": aux}

    def training_loss(self, batch: TrainingBatch, settings: LossSettings = LossSettings()
                      ) -> tuple[Tensor, dict[str, float]]:
        """MCRM: rectangles of one modality zeroed in a share of the samples, then the fused CE
        plus λ × the two modality heads' CE on the pixels the fused head gets wrong."""
        terms = self.terms(settings)
        inputs = mcrm_masking(dict(batch.inputs), self.modalities, float(terms["mcrm_ratio"]))
        out = self.forward_train(inputs, batch.present)
        weight = float(terms["hard_aux_weight"])
        extra = ({"hard_aux_ce": weight * hard_pixel_aux_ce(out["logits"], out["aux_logits"], batch.target)}
                 if weight > 0 else {})
        return segmentation_loss(out["logits"], batch.target, settings, extra)

    def trainable_parameters(self, include_aux_heads: bool = True) -> int:
        return sum(p.numel() for n, p in self.named_parameters()
                   if p.requires_grad and (include_aux_heads or not n.startswith("aux_heads")))
