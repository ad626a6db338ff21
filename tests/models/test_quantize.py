"""models.quantize and the precision choice: real int8 / fp16 graphs of the default bundled package,
calibrated on the shared houses tile, run through the engine with real ONNX Runtime sessions."""
import json
import shutil

import numpy as np
import pytest
from osgeo import gdal

from modalseg.engine import EngineError, GridRequest, LayerInput, OutputPaths, RunOptions, bind_modalities, \
    load_package, run_segmentation
from modalseg.engine.metrics import modality_subsets
from modalseg.engine.package import PackageError, file_sha256, load_variant
from modalseg.engine.precision import choose_graph
from modalseg.engine.runtime import OnnxRunner, make_runner, provider_attempts
from modalseg.models.quantize import LayerSet, parse_layer_set, quantize_package
from tests.fixtures.paths import REPO_ROOT

SOURCE = REPO_ROOT / "resources" / "models" / "modalseg-sgma-urban"
NAME = "modalseg-sgma-urban"


@pytest.fixture(scope="module")
def houses(shared_data) -> dict:
    stem = shared_data / "lidarhd_houses" / "lidarprod_870000_6618000"
    return {part: str(stem) + f"_{part}.tif" for part in ("rgb", "ndsm", "label")}


def houses_layers(houses, subset=("optical", "ndsm")) -> dict:
    layers = {}
    if "optical" in subset:
        layers["optical"] = LayerInput(houses["rgb"])
    if "ndsm" in subset:
        layers["elevation"] = LayerInput(houses["ndsm"], elevation_type="ndsm")
    return layers


@pytest.fixture(scope="module")
def quantised(tmp_path_factory, houses):
    """A copy of the default package with its int8 graph, calibrated and scored on the houses tile."""
    source_sum = file_sha256(SOURCE / f"{NAME}.onnx")
    out = tmp_path_factory.mktemp("int8") / "package"
    logs = []
    report = quantize_package(SOURCE, [LayerSet(houses_layers(houses), houses["label"])], "int8", out,
                              max_tiles=8, threads=2, log=logs.append)
    assert file_sha256(SOURCE / f"{NAME}.onnx") == source_sum  # the source package is never changed
    return out, report, logs


def segment(package, houses, subset, folder, precision, robustness=True):
    sources, _ = bind_modalities(package.metadata, houses_layers(houses, subset))
    paths = OutputPaths(str(folder / f"classes-{precision}-{'+'.join(subset)}.tif"),
                        robustness=str(folder / f"robustness-{precision}-{'+'.join(subset)}.tif") if robustness
                        else None)
    logs = []
    report = run_segmentation(sources, package, GridRequest(), paths, RunOptions(threads=2, precision=precision),
                              log=logs.append)
    return report, gdal.Open(paths.classes).ReadAsArray(), paths, logs


def test_int8_package_loads_validates_and_records_its_making(quantised):
    out, report, logs = quantised
    package = load_package(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{NAME}.onnx", f"{NAME}.int8.onnx", f"{NAME}.json", f"{NAME}.safetensors", "README.md"])
    assert package.onnx_path.name == f"{NAME}.onnx" and set(package.variants) == {"int8"}
    variant = load_variant(package, "int8")
    assert variant.precision == "int8" and variant.onnx_path == report.variant
    record = variant.metadata.extra["precision"]
    assert record["source"]["sha256"] == file_sha256(SOURCE / f"{NAME}.onnx")
    assert record["source"]["name"] == NAME and "QDQ" in record["method"]
    assert any("Softmax" in part for part in record["kept_in_float"])
    assert record["calibration"]["tile_feeds"] == report.calibration_tiles > 0
    subsets = record["accuracy_cost"]["subsets"]
    assert set(subsets) == {"optical", "ndsm", "optical+ndsm"}
    assert all(row["class_agreement"] >= 97.0 and row["miou"] is not None for row in subsets.values())
    import onnx
    kinds = [i.data_type for i in onnx.load(str(report.variant)).graph.initializer]
    assert kinds.count(onnx.TensorProto.INT8) >= 40  # per-channel int8 convolution weights
    assert any("calibrating on" in line for line in logs)


def test_int8_graph_quantises_the_fusion_and_keeps_the_input_features_in_float(quantised):
    """Concat / Mul / Add / Resize between quantised convolutions read int8 tensors (DequantizeLinear
    outputs, fused by ONNX Runtime); the derived height features before the first quantised
    convolution (the wrapper's nodes, outside ``/net/inner``) and the presence mask stay float."""
    import onnx
    graph = onnx.load(str(quantised[1].variant)).graph
    dequantised = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    fusion = ("Concat", "Mul", "Add", "Resize")
    reads_int8 = [n for n in graph.node if n.op_type in fusion and any(i in dequantised for i in n.input)]
    assert len(reads_int8) >= 20
    assert all(n.name.startswith("/net/inner/") for n in reads_int8)
    derived_features = [n for n in graph.node if n.op_type in fusion and n.name.count("/") == 2]
    assert derived_features and not any(i in dequantised for n in derived_features for i in n.input)
    exps = [n for n in graph.node if n.op_type == "Exp"]  # the modality softmaxes, written out
    producers = {o: n for n in graph.node for o in n.output}
    assert exps and all(producers[n.input[0]].op_type == "Sub" for n in exps)
    assert not any(i in dequantised for n in exps for i in producers[n.input[0]].input)


@pytest.mark.parametrize("subset", modality_subsets(("optical", "ndsm")))
def test_int8_agrees_with_fp32_on_every_subset_and_robustness_sums_to_one(quantised, houses, subset, tmp_path):
    package = load_package(quantised[0])
    fp32_report, fp32, _, _ = segment(package, houses, subset, tmp_path, "fp32")
    int8_report, int8, paths, logs = segment(package, houses, subset, tmp_path, "int8")
    assert "fp32 graph" in fp32_report.device and "int8 graph" in int8_report.device
    valid = fp32 != 255
    assert valid.mean() > 0.9
    assert (fp32[valid] == int8[valid]).mean() >= 0.97
    shares = gdal.Open(paths.robustness).ReadAsArray().reshape(len(subset), -1)
    inside = (shares >= 0).all(axis=0)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(shares[:, inside].sum(axis=0), 1.0, atol=1e-3)


def test_auto_runs_int8_on_the_cpu_and_logs_it(quantised, houses, tmp_path):
    report, _, _, logs = segment(load_package(quantised[0]), houses, ("optical", "ndsm"), tmp_path, "auto", False)
    assert "int8 graph 'modalseg-sgma-urban.int8.onnx' (auto: the package ships it for the CPU)" in report.device
    assert any("int8 graph" in line and line.startswith("running on CPU") for line in logs)


@pytest.fixture()
def broken_copy(quantised, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(quantised[0], folder)
    return folder


def test_corrupt_int8_graph_fails_with_its_name_or_falls_back_under_auto(broken_copy):
    (broken_copy / f"{NAME}.int8.onnx").write_bytes(b"not an onnx graph at all")
    package = load_package(broken_copy)  # the fp32 graph still loads
    with pytest.raises(PackageError, match=f"model file '{NAME}.int8.onnx' is not a readable ONNX graph"):
        load_variant(package, "int8")
    with pytest.raises(EngineError, match="is not a readable ONNX graph"):
        make_runner(package, "onnx", "cpu", 1, precision="int8")
    warnings = []
    runner = make_runner(package, "onnx", "cpu", 1, precision="auto", warn=warnings.append)
    assert runner.precision == "fp32"
    assert len(warnings) == 1 and "int8 graph cannot be used" in warnings[0] and "running its fp32 graph" in warnings[0]


def test_int8_graph_of_another_fp32_graph_is_refused(broken_copy):
    import onnx

    graph = broken_copy / f"{NAME}.onnx"
    model = onnx.load(str(graph))  # the fp32 graph changes (as when a package is retrained)
    model.doc_string = "retrained"
    onnx.save(model, str(graph))
    with pytest.raises(PackageError, match="was made from another version of 'modalseg-sgma-urban.onnx'"):
        load_variant(load_package(broken_copy), "int8")


def test_variant_declaring_another_precision_is_refused(broken_copy):
    shutil.copyfile(broken_copy / f"{NAME}.int8.onnx", broken_copy / f"{NAME}.fp16.onnx")
    with pytest.raises(PackageError, match="does not declare itself a fp16 graph .* \\(it says 'int8'\\)"):
        load_variant(load_package(broken_copy), "fp16")


def test_explicit_precisions_without_their_graph_or_runtime_stop_with_the_reason():
    package = load_package(SOURCE)
    package = type(package)(package.onnx_path, package.metadata)  # as if it shipped no variant
    with pytest.raises(EngineError, match="ships no fp16 graph .* make one with modalseg:quantize"):
        choose_graph(package, "fp16", True, print)
    with pytest.raises(EngineError, match="precision int8 needs the ONNX runtime"):
        make_runner(package, "torch", "cpu", 1, network_loader=lambda p: None, precision="int8")
    with pytest.raises(EngineError, match="precision must be one of auto, fp32, int8, fp16, not 'int4'"):
        make_runner(package, "onnx", "cpu", 1, precision="int4")
    assert choose_graph(package, "auto", False, print).precision == "fp32"
    assert choose_graph(package, None, False, print).precision == "fp32"


def test_a_variant_file_given_directly_runs_as_it_is(quantised):
    variant = load_package(quantised[1].variant)
    assert variant.precision == "int8" and variant.variants == {}
    assert choose_graph(variant, "auto", False, print).package.onnx_path == quantised[1].variant
    with pytest.raises(EngineError, match="is the int8 graph; to run precision fp32, give the package folder"):
        choose_graph(variant, "fp32", False, print)


@pytest.fixture(scope="module")
def with_fp16(quantised, houses, tmp_path_factory):
    """The int8 copy plus its fp16 graph, written in place (as the bundled packages get theirs)."""
    folder = tmp_path_factory.mktemp("fp16") / "package"
    shutil.copytree(quantised[0], folder)
    report = quantize_package(folder, [LayerSet(houses_layers(houses), houses["label"])], "fp16", threads=2,
                              log=lambda text: None)
    assert report.package == folder
    return folder, report


def test_fp16_graph_is_chosen_on_a_gpu_path_and_int8_on_the_cpu(with_fp16):
    """No GPU here: the provider lists a CUDA build of onnxruntime would offer are simulated, and the
    graph chosen for each is a real, validated variant."""
    package = load_package(with_fp16[0])
    assert set(package.variants) == {"int8", "fp16"}
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    attempts = provider_attempts("auto", cuda)
    assert attempts == [cuda, ["CPUExecutionProvider"]]
    assert provider_attempts("cuda", cuda) == [cuda]
    assert provider_attempts("auto", ["CPUExecutionProvider"]) == [["CPUExecutionProvider"]]
    chosen = [choose_graph(package, "auto", providers[0] == "CUDAExecutionProvider", print) for providers in attempts]
    assert [c.precision for c in chosen] == ["fp16", "int8"]
    assert chosen[0].package.onnx_path.name == f"{NAME}.fp16.onnx"
    assert chosen[0].reason == "auto: the package ships it for the GPU"
    with pytest.raises(EngineError, match="CUDA was requested but this onnxruntime has no CUDA support"):
        OnnxRunner(package, "cuda", 1, "auto")
    runner = OnnxRunner(package, "auto", 1, "auto")  # this machine: the CPU, so int8
    assert not runner.on_gpu and runner.precision == "int8"


def test_fp16_graph_keeps_float32_io_and_agrees_with_fp32(with_fp16, houses, tmp_path):
    package = load_package(with_fp16[0])
    record = load_variant(package, "fp16").metadata.extra["precision"]
    assert "float16" in record["method"] and record["accuracy_cost"]["subsets"]["optical+ndsm"]["class_agreement"] > 99
    warnings = []
    runner = make_runner(package, "onnx", "cpu", 1, precision="fp16", warn=warnings.append)
    assert runner.precision == "fp16" and "fp16 graph runs on the CPU" in warnings[0]
    assert [o.type for o in runner.session.get_outputs()] == ["tensor(float)", "tensor(float)"]
    _, fp32, _, _ = segment(package, houses, ("optical", "ndsm"), tmp_path, "fp32", False)
    _, fp16, _, _ = segment(package, houses, ("optical", "ndsm"), tmp_path, "fp16", False)
    assert (fp32 == fp16).mean() >= 0.99


def test_output_folder_must_be_new_or_empty_and_layers_parse(quantised, houses, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(EngineError, match="output folder '.*busy' is not empty"):
        quantize_package(SOURCE, [LayerSet(houses_layers(houses))], "int8", tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    with pytest.raises(EngineError, match="already a int8 graph"):
        quantize_package(quantised[1].variant, [LayerSet(houses_layers(houses))], "int8", tmp_path / "new")
    parsed = parse_layer_set(f"optical={houses['rgb']},elevation={houses['ndsm']},labels={houses['label']}")
    assert parsed.labels == houses["label"] and parsed.layers["optical"].path == houses["rgb"]
    with pytest.raises(EngineError, match="must look like role=file"):
        parse_layer_set("ortho.tif")
    assert not (tmp_path / "new").exists()
    assert json.loads((SOURCE / f"{NAME}.json").read_text())["name"] == NAME


@pytest.mark.parametrize("variant", sorted((REPO_ROOT / "resources" / "models").glob("*/*.int8.onnx")),
                         ids=lambda path: path.parent.name)
def test_bundled_int8_graphs_match_their_package_and_the_shipping_rule(variant):
    """A shipped int8 graph was made from the fp32 graph beside it (re-make it after retraining or
    re-stamping: python -m modalseg.models.quantize --package <folder> --held-out) and its held-out
    cost is within the target that decides shipping."""
    record = load_variant(load_package(variant.parent), "int8").metadata.extra["precision"]
    cost = record["held_out_cost"]
    assert cost["average_cost"] <= 1.0 and cost["last1"]["miou_cost"] <= 0.5, cost
    assert variant.stat().st_size + sum(p.stat().st_size for p in variant.parent.iterdir() if p != variant) < 30e6
