"""benchmarks/flood.py's cloudy-chip rule, on chips whose answer is known."""
import numpy as np

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
