"""Training CLI: learns on synthetic scenes, exports a valid package, resumes exactly."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from modalseg.engine.package import load_package
from modalseg.models import train as train_mod
from modalseg.models.data.synthetic import synthetic_scene, write_scene

torch.set_num_threads(1)


class StandIn(nn.Module):
    """Tiny network honouring the contract, with an SGMA-like ``forward_train`` (two heads)."""

    def __init__(self, config):
        super().__init__()
        self.config = dict(config)
        self.modalities = list(config["modalities"])
        self.in_channels = dict(config["modalities"])
        self.num_classes = config["num_classes"]
        self.has_robustness = False
        self.size_multiple = 4
        self.enc = nn.ModuleDict({m: nn.Sequential(nn.Conv2d(c, 12, 3, 1, 1), nn.ReLU(),
                                                   nn.Conv2d(12, 12, 3, 1, 2, dilation=2), nn.ReLU())
                                  for m, c in self.in_channels.items()})
        self.head = nn.Conv2d(12, self.num_classes, 1)
        self.calls_train = 0

    def _fused(self, inputs, present):
        return sum(self.enc[m](inputs[m]) * present[:, i, None, None, None] for i, m in enumerate(self.modalities))

    def forward(self, inputs, present):
        return {"logits": self.head(self._fused(inputs, present))}

    def forward_train(self, inputs, present, mas=True):
        self.calls_train += 1
        f = self._fused(inputs, present)
        return {"logits": self.head(f), "mas_logits": self.head(f * 0.5)}


def _config(tmp_path, steps, **train):
    folder = tmp_path / "data"
    if not folder.exists():
        for i in range(2):
            write_scene(folder, synthetic_scene(96, seed=10 + i), f"s{i}", origin=(500000.0 + 1000 * i, 6600000.0))
    cfg = json.loads((train_mod.PLUGIN_ROOT / "training" / "sgma_default.json").read_text())
    cfg["network"] = {"inner_architecture": "sgma"}  # recorded only: build_net is the stand-in
    cfg["data"].update(root=str(folder), folders=[{"path": ".", "group": "synthetic"}], chip=48,
                       gsd_range=None, val_fraction=0.3)
    cfg["train"].update(steps=steps, batch=4, lr=0.01, warmup=2, log_every=10, val_every=steps,
                        ckpt_every=4, class_weights=None, max_minutes=5, **train)
    return cfg


@pytest.fixture()
def standin(monkeypatch):
    monkeypatch.setattr(train_mod, "build_net", lambda cfg: StandIn(
        {"modalities": {m["name"]: m["bands"] for m in cfg["modalities"]}, "num_classes": 6}))


def test_lr_schedule():
    assert train_mod.lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert train_mod.lr_at(10, 100, 1.0, 10) == pytest.approx(1.0, abs=1e-5)
    assert train_mod.lr_at(100, 100, 1.0, 10) == pytest.approx(0.0, abs=1e-5)
    assert train_mod.lr_at(55, 100, 1.0, 10) == pytest.approx(0.5 ** 0.9, abs=1e-5)


def test_training_learns_and_exports(tmp_path, standin):
    cfg = _config(tmp_path, 80)
    lines = []
    path = train_mod.train(cfg, tmp_path / "pkg", log=lines.append)
    pkg = load_package(path)
    val = pkg.metadata.metrics["validation"]["synthetic"]
    # strips held out on the right of each synthetic tile; chance mIoU over 4 classes is ~0.1
    assert val["subsets"]["optical+ndsm"]["miou"] > 0.5
    assert val["subsets"]["ndsm"]["iou"]["building"] > 0.5  # tall flat objects learnt from height
    assert val["top1"] >= val["average"] >= val["last1"]
    assert pkg.metadata.extra["torch"]["architecture"] == "derived-inputs"
    assert pkg.metadata.architecture == "sgma (+ in-graph elevation features)"
    assert pkg.metadata.attribution.startswith("IGN")
    assert any(line.startswith("step 80/80") for line in lines)
    card = (path.parent / "README.md").read_text()  # model card from the same metadata
    assert f"**{100 * val['subsets']['optical+ndsm']['miou']:.1f}**" in card and "Known failure modes" in card


def test_resume_reproduces_uninterrupted_run(tmp_path, standin):
    straight = train_mod.train(_config(tmp_path, 8), tmp_path / "a", log=lambda s: None)
    cfg = _config(tmp_path, 8, stop_after=4)
    train_mod.train(cfg, tmp_path / "b", log=lambda s: None)  # stops at step 4, checkpoint saved
    lines = []
    resumed = train_mod.train(_config(tmp_path, 8), tmp_path / "b", resume=True, log=lines.append)
    assert any("resumed at step 4" in line for line in lines)
    from safetensors.numpy import load_file
    a, b = load_file(str(straight.with_suffix(".safetensors"))), load_file(str(resumed.with_suffix(".safetensors")))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6)


def test_hard_pixel_loss_and_ema_learn_and_resume_exactly(tmp_path, standin):
    extra = {"hard_pixel": {"keep": 0.25, "weight": 1.0}, "ema": 0.9}
    path = train_mod.train(_config(tmp_path, 60, **extra), tmp_path / "pkg", log=lambda s: None)
    val = load_package(path).metadata.metrics["validation"]["synthetic"]
    assert val["subsets"]["optical+ndsm"]["miou"] > 0.5  # the EMA weights are what is exported
    straight = train_mod.train(_config(tmp_path, 8, **extra), tmp_path / "a", log=lambda s: None)
    train_mod.train(_config(tmp_path, 8, stop_after=4, **extra), tmp_path / "b", log=lambda s: None)
    resumed = train_mod.train(_config(tmp_path, 8, **extra), tmp_path / "b", resume=True, log=lambda s: None)
    from safetensors.numpy import load_file
    a, b = load_file(str(straight.with_suffix(".safetensors"))), load_file(str(resumed.with_suffix(".safetensors")))
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6)
