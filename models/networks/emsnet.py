"""EMSNet-style dual encoder–decoder (optical + elevation or SAR), at CPU size.

Paper: Zhou, Wang, Su, Wen, Zhang & Zhang, "EMSNet: Efficient Multimodal Symmetric Network for
Semantic Segmentation of Urban Scene from Remote Sensing Imagery" (IEEE JSTARS, 2025). Specified
there: two full encoder–decoder streams, the auxiliary stream guided by RGB through a
Separation-and-Aggregation gate at every encoder and decoder level, restore blocks with transposed
convolutions, class-frequency-weighted CE. The paper's second stage (distillation from a LoRA-tuned
SAM teacher) is not reproduced: there is no teacher offline.

Composition: two five-level ``ResidualPyramid`` encoders (strides 2…32; the auxiliary stream has
``aux_blocks`` blocks per level, the optical ``main_blocks``), RGB→aux ``SAGate`` guidance at every
encoder level, two mirrored ``RestoreBlock`` decoders with concatenation skips (the top restore
block is shared, as in the reference code), guidance RSD_i = RS([RSD_{i+1}; SAG(RSR_{i+1}, FPD_i)])
at every decoder level, and a final full-resolution ``SAGate`` fusing the two 16-channel decoder
outputs, then conv3×3-BN-ReLU + 1×1 classifier.

ModalSeg's choices: paper-form SA-Gate (FS channel gates with the crossed recalibration + FA per-pixel
softmax) everywhere, instead of the code's SK-style gate; guidance uses the same-level RGB feature
(as the code); BatchNorm inside restore blocks; plain logits (no sigmoid); default widths
16/16/32/64/96 (≈1.3 M) instead of 64/64/128/256/256 (15.15 M here, paper 15.26 M).

Robustness: the final SAG's FA weights are a per-pixel softmax over the two streams at full
resolution, so ``has_robustness = True`` and ``robustness`` = those weights (sum to 1 over present
modalities, 0 for an absent one). They say which *decoder stream* dominated each pixel; with one
stream absent the gate passes the other through unchanged. ``size_multiple`` = 32.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..nn.backbones import ResidualPyramid
from ..nn.common import ConvBNAct, expand_presence
from ..nn.fusion import SAGate
from ..nn.restore import RestoreBlock
from ..nn.streams import ordered_inputs
from ._base import SegNetwork

DEFAULTS: dict[str, Any] = {
    "widths": [16, 16, 32, 64, 96],
    "main_blocks": 1,
    "aux_blocks": 2,
    "out_channels": 16,
    "reduction": 4,
}


class EMSNet(SegNetwork):
    defaults = DEFAULTS
    modality_count = 2
    size_multiple = 32
    has_robustness = True
    encoder_modules = ("enc_main", "enc_aux")

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        cfg = self.config
        w = [int(v) for v in cfg["widths"]]
        if len(w) != 5:
            raise ValueError(f"EMSNet needs 5 widths, got {w}")
        c_main, c_aux = (self.in_channels[m] for m in self.modalities)
        self.enc_main = ResidualPyramid(c_main, w, [int(cfg["main_blocks"])] * 5, stem_channels=0)
        self.enc_aux = ResidualPyramid(c_aux, w, [int(cfg["aux_blocks"])] * 5, stem_channels=0)
        r = int(cfg["reduction"])
        self.enc_guide = nn.ModuleList(SAGate(c, r) for c in w)
        out_c = int(cfg["out_channels"])
        # Decoder level i (0-based, finest first) maps its input to the width of level i-1.
        outs = [out_c] + w[:-1]
        self.rs_top = RestoreBlock(w[4], w[4], w[3])                 # shared by both streams
        self.dec_main = nn.ModuleList(RestoreBlock(2 * w[i], w[i], outs[i]) for i in range(4))
        self.dec_aux = nn.ModuleList(RestoreBlock(2 * w[i], w[i], outs[i]) for i in range(4))
        self.dec_guide = nn.ModuleList(SAGate(c, r) for c in w)
        self.final = SAGate(out_c, r)
        self.cls = nn.Sequential(ConvBNAct(out_c, out_c, 3), nn.Conv2d(out_c, self.num_classes, 1))

    def forward(self, inputs: Mapping[str, Tensor], present: Tensor) -> dict[str, Tensor]:
        x_m, x_a = ordered_inputs(inputs, self.modalities)
        p_m, p_a = expand_presence(present, 0), expand_presence(present, 1)
        fr, fd = [], []
        for i in range(5):
            x_m = self.enc_main.stages[i](x_m) * p_m
            x_a = self.enc_aux.stages[i](x_a) * p_a
            x_a, _ = self.enc_guide[i](x_m, x_a, p_m, p_a)     # RGB guides the aux stream
            fr.append(x_m)
            fd.append(x_a)
        g, _ = self.dec_guide[4](fr[4], fd[4], p_m, p_a)
        rsr = self.rs_top(fr[4]) * p_m
        rsd = self.rs_top(g) * p_a
        for i in range(3, -1, -1):
            guided, _ = self.dec_guide[i](rsr, fd[i], p_m, p_a)
            rsd = self.dec_aux[i](torch.cat([rsd, guided], 1)) * p_a
            rsr = self.dec_main[i](torch.cat([rsr, fr[i]], 1)) * p_m
        fused, att = self.final(rsr, rsd, p_m, p_a)
        return {"logits": self.cls(fused), "robustness": att}
