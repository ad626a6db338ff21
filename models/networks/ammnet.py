"""AMMNet-like asymmetric RGB + DSM network — a placeholder design built on the abstract alone.

Paper: Ye, Chen, Hu, Chung & Chen, "AMMNet: An Asymmetric Multi-Modal Network for Remote Sensing
Semantic Segmentation" (arXiv 2507.16158, 2025). Its abstract names three parts: an Asymmetric Dual
Encoder (deep RGB, light DSM encoder), an Asymmetric Prior Fuser (a modality-aware prior matrix from
the DSM steering how RGB context is aggregated) and Distribution Alignment (a divergence between the
two feature distributions is minimised). No equation, width or loss weight was available, so every
detail is ModalSeg's:

* ADE: a deep optical ``light_cnn`` (widths 16/32/64/128, depths 1/1/2/1) and a light elevation
  ``light_cnn`` (``aux_widths`` 8/16/32/64, depth 1 each), run as ``SeparateStreams``; a 1×1
  conv per stage aligns the elevation width to the optical width.
* APF per stage: gate form everywhere, plus DSM-prior-biased attention at the coarsest stage
  (``apf_attention_stages``; global attention is affordable only at stride 32).
* DA: per-stage 1×1 projections of both streams (``forward_train``'s ``da_pairs``) aligned by
  ``losses.kl_alignment`` (KL over channels per pixel, τ = 1) with weight 0.1 in
  ``training_loss``, on the samples that have both modalities.
* Decoder: UPerHead (64 channels).

Logits only (``has_robustness = False``): the APF gate is a multiplicative prior on the optical
stream, not a share between modalities. Absent optical → only the DSM injection path remains;
absent DSM → the optical stream passes unchanged. ``size_multiple`` = 32.
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn

from ..nn.backbones import light_cnn
from ..nn.common import expand_presence
from ..nn.decoders import UPerHead
from ..nn.interaction import APF
from ..nn.losses import LossSettings, kl_alignment
from ..nn.streams import SeparateStreams, ordered_inputs
from ._base import SegNetwork, TrainingBatch, segmentation_loss

DEFAULTS: dict[str, Any] = {
    "widths": [16, 32, 64, 128],
    "depths": [1, 1, 2, 1],
    "aux_widths": [8, 16, 32, 64],
    "aux_depths": [1, 1, 1, 1],
    "apf_attention_stages": [3],
    "decoder_channels": 64,
    "da_dim": 32,
    "dropout": 0.1,
}


class AMMNet(SegNetwork):
    defaults = DEFAULTS
    modality_count = 2
    size_multiple = 32
    has_robustness = False
    # L = CE + da_weight · Σ_stages KL(softmax(f_r/τ) ‖ softmax(f_d/τ)); weight and τ are ours
    loss_terms = {"da_weight": 0.1, "da_tau": 1.0}
    encoder_modules = ("streams",)

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        cfg = self.config
        c_main, c_aux = (self.in_channels[m] for m in self.modalities)
        main = light_cnn(c_main, cfg["widths"], cfg["depths"])
        aux = light_cnn(c_aux, cfg["aux_widths"], cfg["aux_depths"])
        self.streams = SeparateStreams([main, aux])
        w, wa = main.out_channels, aux.out_channels
        att = set(int(i) for i in cfg["apf_attention_stages"])
        self.align = nn.ModuleList(nn.Conv2d(a, c, 1) for a, c in zip(wa, w))
        self.apf = nn.ModuleList(APF(c, i in att) for i, c in enumerate(w))
        d = int(cfg["da_dim"])
        self.da_main = nn.ModuleList(nn.Conv2d(c, d, 1) for c in w)
        self.da_aux = nn.ModuleList(nn.Conv2d(c, d, 1) for c in w)
        self.decoder = UPerHead(w, main.out_strides, self.num_classes, int(cfg["decoder_channels"]),
                                float(cfg["dropout"]))

    def _features(self, inputs: Mapping[str, Tensor], present: Tensor):
        levels = self.streams(ordered_inputs(inputs, self.modalities), present)
        p_r, p_d = expand_presence(present, 0), expand_presence(present, 1)
        fused, pairs = [], []
        for i, (f_r, f_d) in enumerate(levels):
            f_d = self.align[i](f_d) * p_d
            fused.append(self.apf[i](f_r, f_d, p_r, p_d))
            pairs.append((self.da_main[i](f_r), self.da_aux[i](f_d)))
        return fused, pairs

    def forward(self, inputs: Mapping[str, Tensor], present: Tensor) -> dict[str, Tensor]:
        fused, _ = self._features(inputs, present)
        return {"logits": self.decoder(fused)}

    def forward_train(self, inputs: Mapping[str, Tensor], present: Tensor) -> dict[str, Any]:
        fused, pairs = self._features(inputs, present)
        return {"logits": self.decoder(fused), "da_pairs": pairs}

    def training_loss(self, batch: TrainingBatch, settings: LossSettings = LossSettings()
                      ) -> tuple[Tensor, dict[str, float]]:
        """CE plus the distribution alignment of the two streams, on the samples that have both
        (aligning with an absent stream would pull the optical features towards a constant)."""
        terms = self.terms(settings)
        out = self.forward_train(batch.inputs, batch.present)
        both = batch.present.min(1).values > 0
        extra = {}
        if bool(both.any()) and terms["da_weight"] > 0:
            tau = float(terms["da_tau"])
            extra["alignment"] = float(terms["da_weight"]) * sum(
                kl_alignment(a[both], b[both], tau) for a, b in out["da_pairs"])
        return segmentation_loss(out["logits"], batch.target, settings, extra)
