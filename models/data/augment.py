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
