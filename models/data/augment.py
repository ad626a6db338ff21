"""Augmentation: geometry jointly on every modality and the label, photometry on optical only."""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np


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

