"""The dominant-modality output: written from the same shares as the robustness output, one named,
coloured category per (modality, share step); on the real houses tile with the default package."""
import numpy as np
import pytest
from osgeo import gdal

from modalseg.engine import (GridRequest, LayerInput, OutputPaths, RunOptions, bind_modalities, load_package,
                             run_segmentation)
from modalseg.engine import dominant
from tests.fixtures.onnx_models import make_pixelwise


def _run(package, houses, folder, **paths):
    sources, _ = bind_modalities(package.metadata, {"optical": LayerInput(str(houses["rgb"])),
                                                    "elevation": LayerInput(str(houses["ndsm"]))})
    return run_segmentation(sources, package, GridRequest(), OutputPaths(classes=str(folder / "classes.tif"), **paths),
                            RunOptions())


@pytest.mark.parametrize("model", ["default", "pixelwise"])
def test_dominant_modality_is_the_largest_share_and_its_step(model, package, houses, tmp_path):
    """The default package (on this tile its nDSM leads almost everywhere) and a fixture network whose
    shares are a softmax of the two normalised inputs, so that each input leads somewhere."""
    if model == "pixelwise":
        package = load_package(make_pixelwise(tmp_path / "model"))
    report = _run(package, houses, tmp_path, robustness=str(tmp_path / "robustness.tif"),
                  dominant=str(tmp_path / "dominant.tif"))
    shares_file = gdal.Open(report.outputs["robustness"])
    shares = shares_file.ReadAsArray().astype(np.float64)
    modalities = [shares_file.GetRasterBand(b + 1).GetDescription() for b in range(shares_file.RasterCount)]
    leads_file = gdal.Open(report.outputs["dominant"])
    band = leads_file.GetRasterBand(1)
    assert band.GetNoDataValue() == dominant.NODATA
    leads = band.ReadAsArray()
    valid = shares[0] != -1.0
    assert np.array_equal(leads == dominant.NODATA, ~valid)
    assert modalities == ["optical", "ndsm"]
    codes = leads[valid].astype(int)
    lead, step = (codes - 1) // dominant.BINS, (codes - 1) % dominant.BINS
    top = shares[:, valid].max(axis=0)
    assert np.array_equal(lead, shares[:, valid].argmax(axis=0))
    # the step holds the lead's share: 0.5 + step * 0.05 <= share <= 0.5 + (step + 1) * 0.05
    assert np.all(top >= 0.5 + step * 0.05 - 1e-6) and np.all(top <= 0.5 + (step + 1) * 0.05 + 1e-6)
    if model == "pixelwise":
        assert set(lead.tolist()) == {0, 1}  # each input leads somewhere on this tile
    # every value is a named, coloured category of its modality
    names = band.GetCategoryNames()
    table = band.GetColorTable()
    for value in np.unique(codes):
        k, s = dominant.decode(int(value))
        low, high = dominant.share_range(s, 2)
        assert names[value] == f"{modalities[k]}: share {low:.2f}-{high:.2f}"
        hue = dominant.colour(k, (s + 1) / dominant.BINS)
        assert table.GetColorEntry(int(value))[:3] == tuple(int(hue[i:i + 2], 16) for i in (1, 3, 5))
    band = leads_file = shares_file = None


def test_dominant_modality_alone_needs_no_robustness_file(package, houses, tmp_path):
    report = _run(package, houses, tmp_path, dominant=str(tmp_path / "dominant.tif"))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".aux.xml")) == ["classes.tif",
                                                                                             "dominant.tif"]
    assert len(report.outputs) == 2


def test_a_model_without_robustness_says_so_and_writes_no_dominant_modality(houses, tmp_path):
    package = load_package(make_pixelwise(tmp_path / "model", has_robustness=False))
    out = tmp_path / "out"
    out.mkdir()
    report = _run(package, houses, out, dominant=str(out / "dominant.tif"))
    assert "model 'pixelwise' does not produce robustness maps; no robustness or dominant-modality map written" \
        in [w.removeprefix("Warning: ") for w in report.warnings]
    assert sorted(report.outputs) == ["classes"]
    assert not (out / "dominant.tif").exists()


def test_categories_cover_an_even_split_to_one_and_deepen_with_the_share():
    found = dominant.categories(["optical", "ndsm", "sar"])
    assert len(found) == 3 * dominant.BINS
    assert found[0].name == "optical: share 0.33-0.40" and found[dominant.BINS - 1].name == "optical: share 0.93-1.00"
    assert found[dominant.BINS].color != found[0].color  # another hue per modality
    pale, full = (sum(int(c.color[i:i + 2], 16) for i in (1, 3, 5)) for c in (found[0], found[dominant.BINS - 1]))
    assert pale > full  # a weak lead is paler (closer to white)
    assert [c.name for c in dominant.categories(["ndsm"])] == ["ndsm: share 1 (only input)"]
    with pytest.raises(Exception, match="at most 25 modalities"):
        dominant.categories([f"m{i}" for i in range(26)])
