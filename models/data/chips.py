"""On-the-fly training chips from aligned raster stacks.

Each sample: one area (a stack and a pixel window of it, so validation can be a spatially
separate window), a random position, optionally a ground sampling distance drawn per sample
(the window is resampled, so one batch mixes GSDs), joint geometric and optical-only
photometric augmentation, then the package's normalisation. Modalities a stack lacks are
absent (zeros, presence 0); ``drop_prob`` also hides present ones (modality dropout).
Labels: raster value v in ``class_values`` -> index, everything else (0 = nodata) -> ``IGNORE``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from . import augment
from ...engine.false_colour import with_estimated_blue
from ...engine.normalize import normalize, own_statistics
from ...engine.package import Normalization, _parse_normalization
from .rasters import RasterStack

if TYPE_CHECKING:  # a type only: the networks' losses import this module, and must load without GDAL
    from .estimated_ground import EstimatedGroundCache

IGNORE = 255


NormLike = Union[Normalization, Mapping[str, object]]  # a parsed recipe or its metadata dict


def as_normalization(spec: NormLike, bands: int) -> Normalization:
    """A package's recipe, typed; dicts are validated by the package reader itself."""
    if isinstance(spec, Normalization):
        return spec
    return _parse_normalization(dict(spec), bands, "normalization")  # type: ignore[arg-type]


@dataclass
class Area:
    """A window (x0, y0, x1, y1) of a stack that samples are drawn from."""

    stack: RasterStack
    window: Tuple[int, int, int, int]

    @property
    def pixels(self) -> int:
        x0, y0, x1, y1 = self.window
        return (x1 - x0) * (y1 - y0)


def split_area(stack: RasterStack, val_fraction: float, side: str = "right") -> Tuple[Area, Area]:
    """Cut a stack into a training area and a spatially separate validation strip."""
    w, h = stack.width, stack.height
    if side in ("right", "left"):
        cut = int(round(w * (1 - val_fraction))) if side == "right" else int(round(w * val_fraction))
        a, b = (0, 0, cut, h), (cut, 0, w, h)
    else:
        cut = int(round(h * (1 - val_fraction))) if side == "bottom" else int(round(h * val_fraction))
        a, b = (0, 0, w, cut), (0, cut, w, h)
    train, val = (a, b) if side in ("right", "bottom") else (b, a)
    return Area(stack, train), Area(stack, val)


def resample(x: np.ndarray, valid: np.ndarray, size: Union[int, Tuple[int, int]]) -> Tuple[np.ndarray, np.ndarray]:
    """C x h x w -> C x size x size (or C x rows x cols), bilinear; box prefilter when shrinking.

    The prefilter mimics what GDAL's warper does when the engine reads a finer raster onto a
    coarser grid, so train and inference see the same smoothing. Nodata stays a mask.
    """
    rows, cols = (size, size) if isinstance(size, int) else size
    if x.shape[-2:] == (rows, cols):
        return x, valid
    fy, fx = x.shape[-2] / rows, x.shape[-1] / cols
    v = valid.astype(np.float32)
    filled = np.where(valid[None], x, 0.0).astype(np.float32)
    shift = [0.0, 0.0]
    if max(fy, fx) > 1.0:
        k = (max(1, int(round(fy))), max(1, int(round(fx))))
        filled = ndimage.uniform_filter(filled, size=(1,) + k, mode="nearest")
        v = ndimage.uniform_filter(v, size=k, mode="nearest")
        # an even box of scipy ends at its pixel: its mean is centred half a pixel before it
        shift = [0.5 if side % 2 == 0 else 0.0 for side in k]
    # pixel-centre mapping: output centre i <-> input coordinate (i + 0.5) * factor - 0.5
    yy, xx = np.meshgrid((np.arange(rows) + 0.5) * fy - 0.5 + shift[0], (np.arange(cols) + 0.5) * fx - 0.5 + shift[1],
                         indexing="ij")
    out = np.stack([ndimage.map_coordinates(b, [yy, xx], order=1, mode="nearest") for b in filled])
    vo = ndimage.map_coordinates(v, [yy, xx], order=1, mode="nearest")
    ok = vo > 0.5
    out = np.where(ok[None], out / np.maximum(vo, 1e-6)[None], 0.0).astype(np.float32)
    return out, ok


def resample_label(label: np.ndarray, size: Union[int, Tuple[int, int]]) -> np.ndarray:
    """Nearest neighbour (class values must not be blended); ``size``: side or (rows, cols)."""
    rows, cols = (size, size) if isinstance(size, int) else size
    if label.shape[-2:] == (rows, cols):
        return label
    iy = np.minimum(((np.arange(rows) + 0.5) * label.shape[-2] / rows).astype(int), label.shape[-2] - 1)
    ix = np.minimum(((np.arange(cols) + 0.5) * label.shape[-1] / cols).astype(int), label.shape[-1] - 1)
    return label[np.ix_(iy, ix)]


class ChipSampler:
    """Draw normalised, augmented chips from areas.

    ``sources`` maps a package modality name to the stack's file key (e.g.
    ``{"optical": "rgb", "ndsm": "ndsm"}``); ``bands`` each modality's band count (absent ones
    are zeros of that depth); ``norms`` gives each modality's recipe.
    """

    def __init__(self, areas: Sequence[Area], modalities: Sequence[str], bands: Mapping[str, int],
                 sources: Mapping[str, str], norms: Mapping[str, NormLike], class_values: Sequence[int], chip: int = 128,
                 gsd_range: Optional[Tuple[float, float]] = None, augment_geometry: bool = True,
                 augment_optical: Sequence[str] = ("optical",), drop_prob: float = 0.0,
                 min_labelled: float = 0.05, area_weights: Optional[Sequence[float]] = None,
                 height_scale: Optional[Tuple[float, float]] = None,
                 height_modalities: Sequence[str] = ("ndsm",), display_modalities: Sequence[str] = (),
                 display_gamma: Tuple[float, float] = (0.5, 2.0),
                 estimated_ground: Optional[EstimatedGroundCache] = None, estimated_share: float = 0.0,
                 strong_photometric: bool = False, false_colour_share: float = 0.0,
                 upsample: bool = False, coarsen_share: float = 0.0,
                 coarsen_gsd: Tuple[float, float] = (1.0, 2.0)) -> None:
        self.areas = list(areas)
        self.modalities = list(modalities)
        self.bands = dict(bands)
        self.sources = dict(sources)
        self.norms = {n: as_normalization(v, self.bands[n]) for n, v in norms.items()}
        self.chip = chip
        self.gsd_range = gsd_range
        # chips may be drawn finer than their data (upsampled), as the engine reads a coarse layer
        # for a package whose GSD range starts above the layer's pixel size
        self.upsample = upsample
        # this share of the chips of data finer than ``coarsen_gsd`` is first averaged down to a pixel
        # size drawn in it and enlarged back, as the engine enlarges a coarse layer onto the network's
        # grid: fine tiles with dense towns then also teach what a 2 m town looks like (the 2 m tiles
        # that train are rural, and a 2 m town's garden trees came out as buildings)
        self.coarsen_share = coarsen_share
        self.coarsen_gsd = coarsen_gsd
        self.augment_geometry = augment_geometry
        self.augment_optical = set(augment_optical)
        self.drop_prob = drop_prob
        self.min_labelled = min_labelled
        # height jitter: heights (nDSM, metres) scaled by one log-uniform factor per chip, so a
        # model trained on a few towns does not learn their exact building / tree heights
        self.height_scale = height_scale
        self.height_modalities = set(height_modalities)
        # display-scaling jitter (augment.display_scaling) for modalities whose training chips are
        # one display stretch of values users bring in other forms (OMBRIA's SAR and optical)
        self.display_modalities = set(display_modalities)
        self.display_gamma = display_gamma
        # estimated-DTM nDSM (models.data.estimated_ground) on this share of the chips of stacks
        # with a DSM: the model also learns the heights a user with a DSM alone gives it
        self.estimated_ground = estimated_ground
        self.estimated_share = estimated_share if estimated_ground is not None else 0.0
        self.photometric = augment.strong_photometric if strong_photometric else augment.photometric
        # this share of optical chips gets the blue the engine gives a false-colour infrared layer
        # (engine.false_colour: a copy of green), so the model also learns what an IRC user feeds
        self.false_colour_share = false_colour_share
        lut = np.full(256, IGNORE, np.uint8)
        for i, v in enumerate(class_values):
            lut[v] = i
        self.lut = lut
        w = np.asarray(area_weights if area_weights is not None else [a.pixels for a in self.areas], float)
        self.p = w / w.sum()

    def _window(self, area: Area, size: int, rng: np.random.Generator) -> Tuple[int, int]:
        x0, y0, x1, y1 = area.window
        xs = x0 + int(rng.integers(0, max(1, x1 - x0 - size + 1)))
        ys = y0 + int(rng.integers(0, max(1, y1 - y0 - size + 1)))
        return xs, ys

    def _read(self, area: Area, key: str, xs: int, ys: int, size: int,
              estimated: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """Window clipped to the area, padded with nodata to size x size (``estimated``: the
        stack's nDSM over its estimated ground instead of ``key``)."""
        x0, y0, x1, y1 = area.window
        w, h = min(size, x1 - xs), min(size, y1 - ys)
        if estimated and self.estimated_ground is not None:
            d, v = self.estimated_ground.read(area.stack, xs, ys, w, h)
        elif key == "label":
            d = area.stack.read_label(xs, ys, w, h)[None].astype(np.float32)
            v = np.ones((h, w), bool)
        else:
            d, v = area.stack.read(key, xs, ys, w, h)
        out = np.zeros((d.shape[0], size, size), np.float32)
        ok = np.zeros((size, size), bool)
        out[:, :h, :w] = d
        ok[:h, :w] = v
        return out, ok

    def _coarse_side(self, gsd: float, native: float, rng: np.random.Generator) -> int:
        """The side the layers of a chip of ``gsd`` from data of ``native`` pixel size are averaged
        down to before enlarging (0: not coarsened)."""
        lo, hi = self.coarsen_gsd
        if self.coarsen_share <= 0 or native >= lo or rng.random() >= self.coarsen_share:
            return 0
        coarse_gsd = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        return max(8, int(round(self.chip * gsd / coarse_gsd)))

    def sample(self, rng: np.random.Generator, area_index: Optional[int] = None,
               gsd: Optional[float] = None) -> Dict[str, np.ndarray]:
        for _ in range(20):  # retry chips that are (almost) all nodata / ignore
            s = self._sample_once(rng, area_index, gsd)
            if (s["label"] != IGNORE).mean() >= self.min_labelled:
                return s
        return s

    def _sample_once(self, rng: np.random.Generator, area_index: Optional[int],
                     gsd: Optional[float]) -> Dict[str, np.ndarray]:
        ai = int(rng.choice(len(self.areas), p=self.p)) if area_index is None else area_index
        area = self.areas[ai]
        native = area.stack.gsd
        if gsd is None and self.gsd_range is not None:
            lo, hi = self.gsd_range
            # log-uniform: as many halvings as doublings; never finer than the data unless upsampling
            gsd = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        gsd = (gsd or native) if self.upsample else max(gsd or native, native)
        src = max(8, int(round(self.chip * gsd / native)))
        xs, ys = self._window(area, src, rng)
        lab, _ = self._read(area, "label", xs, ys, src)
        label = resample_label(self.lut[lab[0].astype(np.uint8)], self.chip)
        raw: Dict[str, np.ndarray] = {}
        valid: Dict[str, np.ndarray] = {}
        coarse = self._coarse_side(gsd, native, rng)
        for name in self.modalities:
            key = self.sources.get(name)
            if key is None or key not in area.stack.files:
                continue
            estimated = (name in self.height_modalities and self.estimated_share > 0
                         and self.estimated_ground.available(area.stack) and rng.random() < self.estimated_share)
            d, v = self._read(area, key, xs, ys, src, estimated)
            if coarse:
                d, v = resample(d, v, coarse)
            raw[name], valid[name] = resample(d, v, self.chip)
        present = [n for n in self.modalities if n in raw]
        if self.drop_prob > 0 and len(present) > 1 and rng.random() < self.drop_prob:
            keep = int(rng.integers(1, len(present)))  # a non-empty proper subset
            present = sorted(rng.choice(present, keep, replace=False).tolist(), key=self.modalities.index)
        any_valid = np.zeros((self.chip, self.chip), bool)
        for n in present:
            any_valid |= valid[n]
        label = np.where(any_valid, label, IGNORE).astype(np.uint8)
        layers = {n: raw[n] for n in present}
        masks = {n + "#valid": valid[n][None].astype(np.float32) for n in present}
        if self.augment_geometry:
            both, label = augment.geometric({**layers, **masks}, label, rng)
            layers = {n: both[n] for n in present}
            masks = {n: both[n] for n in masks}
        out: Dict[str, np.ndarray] = {}
        scale = 1.0
        if self.height_scale is not None and self.augment_geometry:
            lo, hi = self.height_scale
            scale = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        for n in self.modalities:
            if n in layers:
                x = layers[n]
                if n in self.display_modalities and self.augment_geometry:
                    x = augment.display_scaling(x, rng, self.display_gamma)
                if n in self.augment_optical and self.augment_geometry:
                    x = self.photometric(x, rng)
                    if self.false_colour_share and x.shape[0] == 3 and rng.random() < self.false_colour_share:
                        x = with_estimated_blue(x[:2])
                if n in self.height_modalities and scale != 1.0:
                    x = x * np.float32(scale)
                ok = masks[n + "#valid"][0] > 0.5
                # a chip is a whole layer here: percentile recipes take the chip's own percentiles
                # (a chip without a valid pixel of the layer, e.g. off a footprint, stays zeros)
                out[n] = (normalize(x, ok, self.norms[n], own_statistics(x, ok, self.norms[n])) if ok.any()
                          else np.zeros((self.bands[n], self.chip, self.chip), np.float32))
            else:
                out[n] = np.zeros((self.bands[n], self.chip, self.chip), np.float32)
        out["present"] = np.array([1.0 if n in layers else 0.0 for n in self.modalities], np.float32)
        out["label"] = label
        out["gsd"] = np.float32(gsd)
        return out

    def batch(self, n: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        samples = [self.sample(rng) for _ in range(n)]
        return {k: np.stack([s[k] for s in samples]) for k in samples[0]}
