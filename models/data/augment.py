"""Augmentation: geometry jointly on every modality and the label, photometry on optical only
(``photometric``, or ``strong_photometric`` for recipes with a pretrained optical encoder)."""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
from scipy import ndimage


def geometric(layers: Dict[str, np.ndarray], label: np.ndarray, rng: np.random.Generator
              ) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
    """Same random rot90 / flip for all layers (C x H x W) and the label (H x W)."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))

    def f(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, k, axes=(-2, -1))
        return np.ascontiguousarray(a[..., ::-1] if flip else a)

    return {n: f(a) for n, a in layers.items()}, f(label)


def photometric(optical: np.ndarray, rng: np.random.Generator, max_value: float = 255.0) -> np.ndarray:
    """Brightness / contrast / per-band gain / gamma jitter in raw units (0..max_value).

    Orthophotos differ by sensor, season and radiometric processing; a model trained on two
    tiles must not learn their exact colours.
    """
    x = optical.astype(np.float32) / max_value
    gain = rng.uniform(0.8, 1.2) * rng.uniform(0.92, 1.08, size=(x.shape[0], 1, 1))
    mean = x.mean(axis=(1, 2), keepdims=True)
    contrast = rng.uniform(0.75, 1.3)
    x = (x - mean) * contrast + mean
    x = np.clip(x * gain, 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    x = x + rng.normal(0.0, rng.uniform(0.0, 0.02), size=x.shape)
    return (np.clip(x, 0.0, 1.0) * max_value).astype(np.float32)


def display_scaling(layer: np.ndarray, rng: np.random.Generator, gamma: Tuple[float, float] = (0.5, 2.0),
                    max_value: float = 255.0) -> np.ndarray:
    """A random monotone remapping of a display-scaled layer (0..max_value): gamma (log-uniform in
    ``gamma``, slightly different per band) and a random clip of up to 3 % at either end.

    Users' files reach the network through other value mappings than the training chips' display
    stretch (SAR in dB floats, reflectance 0-10 000, another 8-bit stretch); after percentile
    normalisation an affine change vanishes, what remains is curvature and saturation, which this
    draws.
    """
    x = np.clip(layer.astype(np.float32) / max_value, 0.0, 1.0)
    g = np.exp(rng.uniform(np.log(gamma[0]), np.log(gamma[1])))
    g = g * rng.uniform(0.92, 1.08, size=(x.shape[0], 1, 1))
    x = x ** g.astype(np.float32)
    low, high = rng.uniform(0.0, 0.03), rng.uniform(0.97, 1.0)
    return (np.clip((x - low) / (high - low), 0.0, 1.0) * max_value).astype(np.float32)


def strong_photometric(optical: np.ndarray, rng: np.random.Generator, max_value: float = 255.0) -> np.ndarray:
    """``photometric`` plus what differs between orthophoto producers and one pretrained optical
    encoder must not learn from two training tiles: hue / saturation (RGB only), blur, sensor
    noise and JPEG-like block compression, each on a share of the chips (raw units 0..max_value)."""
    x = photometric(optical, rng, max_value) / max_value
    if x.shape[0] == 3:
        x = _hue_saturation(x, rng.uniform(-0.35, 0.35), rng.uniform(0.6, 1.4))
    if rng.random() < 0.3:
        sigma = rng.uniform(0.3, 1.2)
        x = np.stack([ndimage.gaussian_filter(b, sigma, mode="nearest") for b in x])
    if rng.random() < 0.3:
        x = x + rng.normal(0.0, rng.uniform(0.005, 0.03), size=x.shape)
    if rng.random() < 0.3:
        x = jpeg_like(x, rng.uniform(0.02, 0.08))
    return (np.clip(x, 0.0, 1.0) * max_value).astype(np.float32)


def _hue_saturation(rgb: np.ndarray, hue_radians: float, saturation: float) -> np.ndarray:
    """Rotate colours about the grey axis by ``hue_radians`` and scale their distance to it."""
    axis = np.full(3, 1.0 / np.sqrt(3.0))
    cross = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    rot = (np.cos(hue_radians) * np.eye(3) + np.sin(hue_radians) * cross
           + (1.0 - np.cos(hue_radians)) * np.outer(axis, axis))
    grey = rgb.mean(0, keepdims=True)
    chroma = np.tensordot(rot, rgb - grey, axes=1) * saturation
    return (grey + chroma).astype(np.float32)


def jpeg_like(x: np.ndarray, step: float, block: int = 8) -> np.ndarray:
    """Blockwise DCT quantisation (bands x H x W, values 0..1): the step grows with frequency, as in
    JPEG's tables, so fine texture is lost and 8 x 8 block edges appear."""
    from scipy.fft import dctn, idctn

    c, h, w = x.shape
    ph, pw = -h % block, -w % block
    padded = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="edge")
    blocks = padded.reshape(c, (h + ph) // block, block, (w + pw) // block, block)
    freq = np.add.outer(np.arange(block), np.arange(block))
    q = (step * (1.0 + freq)).reshape(1, 1, block, 1, block)
    coef = dctn(blocks, axes=(2, 4), norm="ortho")
    out = idctn(np.round(coef / q) * q, axes=(2, 4), norm="ortho")
    return out.reshape(c, h + ph, w + pw)[:, :h, :w].astype(np.float32)
