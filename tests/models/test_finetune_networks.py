"""Fine-tuning a small package of each of the five networks: the network's own training step runs
(auxiliary losses included), the encoder it names stays frozen, and the new package loads."""
import math

import pytest
import torch

from modalseg.engine import LayerInput, bind_modalities, load_package
from modalseg.models.data.synthetic import synthetic_scene, write_scene
from modalseg.models.export import base_metadata, export_package
from modalseg.models.finetune import FinetuneOptions, LabelInput, finetune
from modalseg.models.networks.registry import build_network, load_network
from tests.models.tiny_networks import ARCHITECTURES, network_config, modality_entries

ROLE = {"optical": "optical", "ndsm": "elevation", "sar": "sar"}
FAST = dict(epochs=2, chip=64, batch_size=2, steps_per_epoch=3, patience=0, val_fraction=0.0,
            learning_rate=3e-3, freeze="encoder", threads=1)  # shared CPUs: one torch thread


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("scene"), synthetic_scene(128, seed=3), "tile")


def _package(architecture, folder):
    torch.manual_seed(0)
    net = build_network(architecture, network_config(architecture)).eval()
    meta = base_metadata(f"tiny-{architecture}", modality_entries(architecture), architecture=architecture,
                         description="test network", training_data="none (random weights)", tile_size=64,
                         size_multiple=32, overlap=16)
    return export_package(net, meta, folder, architecture=architecture, config=net.config)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_finetune_each_network(architecture, scene, tmp_path):
    start = load_package(_package(architecture, tmp_path / "start"))
    layers = {ROLE[e["name"]]: LayerInput(str(scene[e["source"]]), elevation_type="ndsm" if e["name"] == "ndsm" else "auto")
              for e in modality_entries(architecture, with_source=True)}
    sources, _ = bind_modalities(start.metadata, layers)
    log = []
    result = finetune(start.onnx_path, sources, LabelInput(raster=str(scene["label"])), tmp_path / "tuned",
                      FinetuneOptions(**FAST), log=log.append)
    assert result.stopped == "epochs" and result.epochs == 2
    assert all(math.isfinite(h.loss) and h.loss > 0 for h in result.history), result.history
    assert any(line.startswith("frozen: encoder") for line in log), log
    tuned = load_package(result.onnx_path)  # the engine's validating reader
    assert tuned.metadata.extra["finetune"]["base_model"]["name"] == f"tiny-{architecture}"
    assert tuned.metadata.extra["torch"]["architecture"] == architecture
    before, after = load_network(start).state_dict(), load_network(tuned).state_dict()
    encoder = tuple(f"{m}." for m in load_network(start).encoder_modules)
    trainable = [k for k, v in before.items() if v.is_floating_point() and "running_" not in k]
    frozen = [k for k in trainable if k.startswith(encoder)]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trainable if not k.startswith(encoder))
    # BatchNorm statistics stay the package's (a few labels cannot re-estimate them), in every layer
    statistics = [k for k in before if "running_" in k]
    assert all(torch.equal(before[k], after[k]) for k in statistics)
