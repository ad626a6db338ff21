"""The network fine-tuning starts from: the package's own, rebuilt with its weights, the class
head resized for new classes, and the layers the analyst chose frozen."""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

from ...engine.errors import WARNING_PREFIX, EngineError
from ...engine.package import ClassInfo, ModelPackage
from .labels import Log
from .options import FREEZE_CHOICES


def start_network(package: ModelPackage, classes: Sequence[ClassInfo], log: Log) -> Tuple[Any, Dict[str, Any]]:
    """The package's network with its weights, and its config; a head resized for new classes
    keeps the rows of the old ones."""
    from ..networks.registry import build_network, load_network, without_pretrained

    try:
        base = load_network(package)
    except ValueError as exc:
        raise EngineError(str(exc)) from None
    old = [c.value for c in package.metadata.classes]
    new = [c.value for c in classes]
    if new == old:
        return base, dict(package.metadata.extra["torch"]["config"])
    recipe = package.metadata.extra["torch"]
    config = dict(recipe["config"], num_classes=len(new))  # the recipe as it was, for the package written
    net = build_network(recipe["architecture"], without_pretrained(config))
    state = net.state_dict()
    resized = []
    for key, tensor in base.state_dict().items():
        if key not in state:
            continue
        target = state[key]
        if target.shape == tensor.shape:
            state[key] = tensor
        elif tensor.shape[0] == len(old) and target.shape[0] == len(new) and tensor.shape[1:] == target.shape[1:]:
            for i, value in enumerate(old):  # rows of kept classes keep their weights
                target[new.index(value)] = tensor[i]
            resized.append(key)
    net.load_state_dict(state)
    log(f"class head re-initialised for {len(new) - len(old)} new class(es) ({len(resized)} tensors resized)")
    return net, config


def freeze(net: Any, how: str, num_classes: int, log: Log) -> None:
    """Freeze ``how`` (a key of ``options.FREEZE``): the modules the network names as its encoder
    (``encoder_modules``), or everything but the layers producing class scores."""
    if how not in FREEZE_CHOICES:
        raise EngineError(f"freeze must be one of {', '.join(FREEZE_CHOICES)}")
    if how == "none":
        return
    head = set()
    for name, p in net.named_parameters():
        if p.shape and p.shape[0] == num_classes:  # layers producing class scores (and their biases)
            head.add(name)
    encoder = tuple(f"{module}." for module in net.encoder_modules)
    frozen = 0
    for name, p in net.named_parameters():
        if (name.startswith(encoder) if how == "encoder" else name not in head):
            p.requires_grad_(False)
            frozen += p.numel()
    total = sum(p.numel() for p in net.parameters())
    if how == "encoder" and frozen == 0:
        log(WARNING_PREFIX + "this network has no layer recognisable as an encoder; nothing was frozen")
    else:
        log(f"frozen: {how} ({frozen / max(1, total):.0%} of {total} parameters)")


def keep_batch_norm_statistics(net: Any) -> None:
    """Put every BatchNorm layer back in evaluation mode after ``net.train()``: its running statistics
    stay the package's. A few polygons give chips too few and too alike to re-estimate them; measured
    on a held-out LiDAR tile (benchmarks/few_labels), re-estimating them took the fine-tune validation
    mIoU from 0.70 to 0.19 in the first epoch, keeping them held it at 0.70."""
    from torch import nn

    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
