"""Derived elevation inputs computed *inside* the network graph, so the engine needs nothing new.

``DerivedInputs`` wraps any contract network: the raw nDSM (metres, normalisation = identity)
goes in, and the inner network sees per pixel

* ``log1p(h)``: spreads the decimetres that separate low vegetation from ground, which a linear
  0-30 m scaling squeezes into ~1 % of the range;
* ``h / 10``: plain height, clipped to 0..6 (60 m);
* local roughness, the standard deviation of h over 3 x 3 and 9 x 9 pixels (1.5 m and 4.5 m at
  0.5 m GSD): tree crowns are rough, roofs and ground smooth;
* slope magnitude (Sobel, per pixel, in metres per pixel).
``elevation_v2`` measures roughness against the local plane instead: the root mean square, over
k x k pixels, of h minus its own k x k mean, which is zero on any plane (pitched roofs, slopes) and
large on tree crowns, where v1's standard deviation also grows with a roof's pitch (used by an
ablation recipe only: training/README.md, elevation-only ablations).
``elevation_v3`` is v1 plus a sixth channel that tells the network how fine the layer really is:
the log ratio, over 33 x 33 pixels, of h's mean absolute difference to its 3 x 3 mean and to its
9 x 9 mean. A layer at the network's pixel size keeps detail at 3 px (about -0.8 on the 0.5 m LiDAR
tiles); a 2 m layer that segment enlarged to 0.5 m is bilinear within its cells and has almost
none (about -1.9; 1 m: -1.5), so one network can learn both regimes instead of mixing them.

Everything is a fixed conv / pool / pointwise op, exported with the graph (ONNX parity holds),
so the same maths runs at training, in the ONNX package and in the torch runtime. Rebuild with
``build_derived(config)`` (``extra.torch.architecture == "derived-inputs"``).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .networks._base import TrainingBatch
from .nn.losses import LossSettings

def _window_mean(x: Tensor, k: int) -> Tensor:
    """Mean of x over k x k pixels (windows clipped at the borders)."""
    return F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)


def _window_std(h: Tensor, k: int) -> Tensor:
    """Standard deviation of h over k x k pixels (windows clipped at the borders)."""
    mean = _window_mean(h, k)
    return torch.sqrt(F.relu(_window_mean(h * h, k) - mean * mean) + 1e-6)


def _plane_roughness(h: Tensor, k: int) -> Tensor:
    """Root mean square over k x k pixels of h minus its k x k mean: a symmetric window's mean of a
    plane is the plane's value at the centre, so planes of any slope give 0 (differences are taken
    before squaring, so metres of height lose no precision in float32)."""
    def window_mean(x: Tensor) -> Tensor:
        return F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, 1)

    residual = h - window_mean(h)
    return torch.sqrt(window_mean(residual * residual) + 1e-6)


_ROUGHNESS = {"elevation_v1": _window_std, "elevation_v2": _plane_roughness, "elevation_v3": _window_std}
FEATURES = {"elevation_v1": 5, "elevation_v2": 5, "elevation_v3": 6}
DETAIL_WINDOW = 33  # pixels over which the detail ratio of elevation_v3 is averaged


def _detail_ratio(h: Tensor) -> Tensor:
    """log of mean |h - 3x3 mean| over mean |h - 9x9 mean|, both averaged over DETAIL_WINDOW pixels
    (0 on flat ground, where both vanish into the 1 cm floor)."""
    fine = _window_mean(torch.abs(h - _window_mean(h, 3)), DETAIL_WINDOW)
    coarse = _window_mean(torch.abs(h - _window_mean(h, 9)), DETAIL_WINDOW)
    return torch.log((fine + 0.01) / (coarse + 0.01))


def elevation_features(h: Tensor, kind: str = "elevation_v1") -> Tensor:
    """B x 1 x H x W heights in metres -> B x FEATURES[kind] x H x W features of ``kind`` (see module docstring)."""
    h = F.relu(h)
    feats = [torch.log1p(h), torch.clamp(h / 10.0, max=6.0)]
    for k in (3, 9):
        feats.append(torch.log1p(_ROUGHNESS[kind](h, k)))
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=h.device) / 8.0
    weight = torch.stack([kx, kx.t()])[:, None]
    g = F.conv2d(F.pad(h, (1, 1, 1, 1), mode="replicate"), weight)
    feats.append(torch.log1p(torch.sqrt((g * g).sum(1, keepdim=True) + 1e-6)))
    if kind == "elevation_v3":
        feats.append(_detail_ratio(h))
    return torch.cat(feats, 1)


class DerivedInputs(nn.Module):
    """Contract network whose listed modalities are expanded into derived features first."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        from .networks.registry import build_network

        self.config: Dict[str, Any] = dict(config)
        derive = dict(config["derive"])
        outer = {str(k): int(v) for k, v in config["modalities"].items()}
        inner_cfg = dict(config.get("inner_config", {}))
        inner_cfg["modalities"] = {m: (FEATURES[derive[m]] if m in derive else c) for m, c in outer.items()}
        inner_cfg["num_classes"] = int(config["num_classes"])
        self.inner = build_network(config["inner_architecture"], inner_cfg)
        self.config["inner_config"] = {k: v for k, v in self.inner.config.items() if k != "modalities"}
        self.derive = derive
        self.modalities = list(outer)
        self.in_channels = outer
        self.num_classes = self.inner.num_classes
        self.has_robustness = bool(getattr(self.inner, "has_robustness", False))
        self.size_multiple = int(getattr(self.inner, "size_multiple", 1))
        self.encoder_modules = tuple(f"inner.{name}" for name in self.inner.encoder_modules)

    def _expand(self, inputs: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        return {m: elevation_features(x, self.derive[m]) if m in self.derive else x for m, x in inputs.items()}

    def forward(self, inputs: Mapping[str, Tensor], present: Tensor) -> Dict[str, Tensor]:
        return self.inner(self._expand(inputs), present)

    def terms(self, settings: LossSettings) -> Dict[str, Any]:
        return self.inner.terms(settings)

    def training_loss(self, batch: TrainingBatch, settings: LossSettings = LossSettings()
                      ) -> tuple[Tensor, Dict[str, float]]:
        """The inner network's training step (its auxiliary losses included) on the derived features."""
        derived = TrainingBatch(self._expand(batch.inputs), batch.present, batch.target)
        return self.inner.training_loss(derived, settings)


def build_derived(config: Mapping[str, Any]) -> DerivedInputs:
    return DerivedInputs(config)
