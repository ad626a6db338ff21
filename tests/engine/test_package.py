"""Model package reading and validation: every problem is reported with the field or file at fault."""
import json

import pytest

from modalseg.engine.package import (PackageError, list_packages, load_package, parse_metadata,
                                     read_sidecar_metadata)
from tests.fixtures.onnx_models import base_metadata, make_pixelwise


def _metadata(**changes):
    meta = base_metadata("m", {"type": "minmax", "min": [0, 0, 0], "max": [255, 255, 255]},
                         {"type": "percentile", "low": 2, "high": 98})
    meta.update(changes)
    return meta


def test_valid_metadata_round_trips():
    meta = parse_metadata(_metadata())
    assert meta.modality_names == ("optical", "ndsm")
    assert meta.class_values == (1, 2, 3)
    assert meta.classes[0].rgb == (255, 0, 0)
    assert meta.modality("ndsm").normalization.high == 98
    assert parse_metadata(json.loads(meta.to_json())) == meta
    assert meta.gsd.inputs == (meta.gsd.min, meta.gsd.max)  # not stated: the network's own range


def test_the_layers_range_of_a_network_run_at_one_pixel_size_round_trips():
    meta = parse_metadata(_metadata(gsd={"native": 0.5, "min": 0.5, "max": 0.5, "inputs": [0.5, 2]}))
    assert meta.gsd.inputs == (0.5, 2.0) and meta.gsd.nearest(2.0) == 0.5
    assert parse_metadata(json.loads(meta.to_json())) == meta


@pytest.mark.parametrize("change,message", [
    ({"schema_version": 7}, "schema version 7"),
    ({"classes": []}, "'classes' must be a non-empty list"),
    ({"classes": [{"value": 1, "name": "a", "color": "red"}]}, "classes\\[0\\].color"),
    ({"classes": [{"value": 1, "name": "a"}, {"value": 1, "name": "b"}]}, "unique"),
    ({"tile_size": 100, "size_multiple": 32}, "multiple of 'size_multiple'"),
    ({"gsd": {"native": 1}}, "'gsd'"),
    ({"gsd": {"native": 0.5, "min": 0.5, "max": 0.5, "inputs": [2.0]}}, "'inputs' a pair of numbers"),
    ({"gsd": {"native": 0.5, "min": 0.5, "max": 0.5, "inputs": [2.0, 0.5]}}, "'gsd.inputs' must be two"),
    ({"presence_input": None}, "presence_input"),
])
def test_invalid_metadata_names_the_field(change, message):
    with pytest.raises(PackageError, match=message):
        parse_metadata(_metadata(**change))


def test_wrong_normalisation_band_count_is_reported():
    meta = _metadata()
    meta["modalities"][0]["normalization"] = {"type": "meanstd", "mean": [0, 0], "std": [1, 1]}
    with pytest.raises(PackageError, match=r"modalities\[0\].normalization.mean' must list 3 numbers"):
        parse_metadata(meta)


def test_corrupt_onnx_file_is_reported(tmp_path):
    path = make_pixelwise(tmp_path / "p")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(PackageError, match="not a readable ONNX graph"):
        load_package(path)


def test_missing_model_file_is_reported(tmp_path):
    with pytest.raises(PackageError, match="does not exist"):
        load_package(tmp_path / "nothing.onnx")


def test_graph_inputs_must_match_metadata(tmp_path):
    import onnx
    path = make_pixelwise(tmp_path / "p")
    model = onnx.load(str(path))
    meta = json.loads(model.metadata_props[0].value)
    meta["modalities"][1]["name"] = "dsm_height"
    model.metadata_props[0].value = json.dumps(meta)
    onnx.save(model, str(path))
    with pytest.raises(PackageError, match="do not match the metadata"):
        load_package(path)


def test_packages_are_listed_from_their_sidecars(tmp_path):
    make_pixelwise(tmp_path / "pixelwise")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "broken.onnx").write_bytes(b"x")
    (tmp_path / "broken" / "broken.json").write_text("{")
    found = list_packages(tmp_path)
    assert [meta.name for _, meta in found] == ["pixelwise"]
    assert read_sidecar_metadata(tmp_path / "pixelwise").tile_size == 64
    assert load_package(tmp_path / "pixelwise").metadata == found[0][1]
