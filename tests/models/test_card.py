"""The model card shows the honest figures first: held-out table, few-label table, observed failure modes."""
import json

from tests.fixtures.paths import REPO_ROOT
from modalseg.models.card import write_card

SIDECAR = REPO_ROOT / "resources" / "models" / "modalseg-sgma-urban" / "modalseg-sgma-urban.json"


def test_card_renders_held_out_and_few_label_figures(tmp_path):
    meta = json.loads(SIDECAR.read_text())
    meta["metrics"]["held_out"] = {"protocol": "whole held-out tiles", "groups": {"2 m tiles": {
        "ndsm": {"miou": 70.5, "per_class": {"1": 95.8, "2": 75.5}, "pixels": 231301}}}, "subsets": {
        "ndsm": {"miou": 67.3, "per_class": {"1": 93.3, "5": 1.7}, "pixels": 327969},
        "optical": {"miou": 26.6, "per_class": {"1": 49.0}, "pixels": 48990}}}
    meta["metrics"]["few_labels"] = {"protocol": "seeded polygons", "areas": {
        "tile_a": {"polygons": 20, "cover_percent": 2.77, "untuned_miou": 69.4, "tuned_miou": 74.9},
        "tile_b": {"subset": "ndsm", "error": "the fine-tuned model could not be exported"}}}
    text = write_card(tmp_path, meta).read_text()
    held = text.index("## Held-out accuracy")
    assert held < text.index("## Few-label fine-tuning") < text.index("## Accuracy on validation strips")
    assert "| 2 m tiles | ndsm | 95.8 | 75.5 | – | – | – | – | **70.5** | 231301 |" in text
    assert "| all, pooled | optical | 49.0 | – | – | – | – | – | **26.6** | 48990 |" in text
    assert "| tile_a | 20 | 2.8 % | 69.4 | 74.9 | +5.5 |" in text
    assert "| tile_b | – | – | – | failed: the fine-tuned model could not be exported | – |" in text
    assert "Held-out accuracy with optical alone is low (mIoU 26.6 %)" in text
    assert "Held-out IoU below 40 % with ndsm: water 1.7." in text
    assert "Pixel size: " in text and "GSD: the network runs at" in text
    for mode in meta["extra"]["training_config"]["package"]["failure_modes"]:  # the recipe's come first
        assert f"- {mode}" in text


def test_card_states_the_layers_range_of_a_network_run_at_one_pixel_size(tmp_path):
    meta = json.loads(SIDECAR.read_text())
    meta["gsd"] = {"native": 0.5, "min": 0.5, "max": 0.5, "inputs": [0.5, 2.0]}
    text = write_card(tmp_path, meta).read_text()
    assert ("Pixel size: layers of 0.5–2.0 m (the network runs at 0.5 m: `segment` resamples every layer to it, "
            "as training did)") in text
    assert "GSD: the network runs at 0.5 m (trained around 0.5 m" in text
    meta["gsd"] = {"native": 0.5, "min": 0.25, "max": 2.0}
    text = write_card(tmp_path, meta).read_text()
    assert "Pixel size: 0.25–2.0 m (trained around 0.5 m); `segment` resamples outside that range" in text
    assert "GSD: the network runs at 0.25–2.0 m" in text
