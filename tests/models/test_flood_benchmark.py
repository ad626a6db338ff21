"""benchmarks/flood.py's cloudy-chip rule and SAR threshold baselines, on chips whose answer is known."""
import numpy as np
import pytest

from modalseg.benchmarks.flood import BRIGHT, CLOUDY_SHARE, cloud_share


def test_bright_grey_pixels_are_cloud_and_coloured_or_dark_ones_are_not():
    chip = np.zeros((3, 10, 10), np.float32)
    chip[:, :5] = 230.0  # white cloud on the top half
    chip[0, 5:], chip[1, 5:], chip[2, 5:] = 200.0, 60.0, 40.0  # bright but saturated: red roofs
    assert cloud_share(chip) == 0.5
    chip[:, :5] = BRIGHT - 1.0  # grey, a little too dark: haze over water is not counted
    assert cloud_share(chip) == 0.0
    pale_blue = np.stack([np.full((10, 10), v, np.float32) for v in (170.0, 190.0, 230.0)])
    assert cloud_share(pale_blue) == 1.0 > CLOUDY_SHARE  # display-stretched cloud tops are pale blue


def _write_chip(root, name, sar, mask):
    from osgeo import gdal

    for folder, array in (("s1_after", sar), ("mask", mask)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        memory = gdal.GetDriverByName("MEM").Create("", array.shape[1], array.shape[0], 1, gdal.GDT_Byte)
        memory.GetRasterBand(1).WriteArray(array)
        gdal.GetDriverByName("PNG").CreateCopy(str(root / folder / f"{name}.png"), memory)


def test_sar_threshold_baselines_on_chips_whose_answer_is_known(tmp_path):
    """A chip whose water (value 40) and land (200) split cleanly: Otsu and the best threshold both
    get it whole. A second chip has dark land the mask calls land (value 60) beside its water (30):
    Otsu, blind to the mask, splits between the dark and the bright, and the best threshold still
    finds the split under 60."""
    from modalseg.benchmarks.flood import sar_threshold_baselines
    from modalseg.models.data.ombria import find_ombria_chips

    clean_sar = np.full((16, 16), 200, np.uint8)
    clean_sar[:, :6] = 40
    clean_mask = np.zeros((16, 16), np.uint8)
    clean_mask[:, :6] = 255
    _write_chip(tmp_path, "0001", clean_sar, clean_mask)
    chips = find_ombria_chips(tmp_path, ["s1_after"])
    assert sar_threshold_baselines(chips) == {"otsu": 100.0, "best_threshold": 100.0}
    shadow_sar = np.full((16, 16), 200, np.uint8)
    shadow_sar[:, :4], shadow_sar[:, 4:8] = 30, 60  # water, then dark land (radar shadow)
    shadow_mask = np.zeros((16, 16), np.uint8)
    shadow_mask[:, :4] = 255
    _write_chip(tmp_path, "0002", shadow_sar, shadow_mask)
    figures = sar_threshold_baselines(find_ombria_chips(tmp_path, ["s1_after"]))
    # Otsu on chip 2 calls its 64 shadow pixels water: pooled IoU (96 + 64) / (96 + 64 + 64)
    assert figures["otsu"] == pytest.approx(100.0 * 160 / 224)
    assert figures["best_threshold"] == 100.0
