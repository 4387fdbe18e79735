"""Surface colours as per-vertex RGB in [0, 1]: plain, stripes, a label band, smooth colour noise.

Every pattern is a function of vertex positions (and a generator), so it needs no UV layout; the
colours end up as the glTF ``COLOR_0`` attribute, which every loader and ``mar3d prepare`` keep.
"""
from __future__ import annotations

import colorsys

import numpy as np

STYLES = ("plain", "stripes", "label", "noise")


def colour(rng: np.random.Generator, hue=None, saturation=(0.45, 0.9), value=(0.45, 0.95)) -> np.ndarray:
    """A random RGB colour; ``hue`` is a (low, high) range in turns (wrapping), or None for any hue."""
    h = rng.uniform(*hue) % 1.0 if hue is not None else rng.uniform()
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(*saturation), rng.uniform(*value)))


def smooth_noise(points: np.ndarray, rng: np.random.Generator, frequency: float, waves: int = 6) -> np.ndarray:
    """(N,) values in about [-1, 1]: a sum of random plane waves of the given spatial frequency (1/m)."""
    directions = rng.normal(size=(waves, 3))
    directions *= frequency * 2 * np.pi / np.linalg.norm(directions, axis=1, keepdims=True)
    phases = rng.uniform(0, 2 * np.pi, waves)
    return np.sin(points @ directions.T + phases).sum(axis=1) / np.sqrt(waves / 2)


def plain(points: np.ndarray, base: np.ndarray) -> np.ndarray:
    return np.broadcast_to(base, points.shape).copy()


def stripes(coordinate: np.ndarray, period: float, first: np.ndarray, second: np.ndarray,
            duty: float = 0.5) -> np.ndarray:
    """Alternating bands along a scalar coordinate (height, angle x radius, ...)."""
    second_band = (coordinate / period) % 1.0 >= duty
    return np.where(second_band[:, None], second, first)


def noise(points: np.ndarray, rng: np.random.Generator, base: np.ndarray, amount: float = 0.25,
          frequency: float = 20.0) -> np.ndarray:
    """The base colour with smooth brightness and hue variation plus a fine speckle."""
    shade = 1 + amount * smooth_noise(points, rng, frequency)
    tint = amount * 0.5 * np.stack([smooth_noise(points, rng, frequency * 1.7, 3) for _ in range(3)], 1)
    speckle = amount * 0.3 * smooth_noise(points, rng, frequency * 9, 8)[:, None]
    return np.clip(base * shade[:, None] + tint * base + speckle * base, 0, 1)


def label(points: np.ndarray, height: np.ndarray, around: np.ndarray, rng: np.random.Generator,
          low: float, high: float, background: np.ndarray) -> np.ndarray:
    """A printed label between heights ``low`` and ``high``: a coloured band carrying blocks of 'print'.

    ``around`` is the arc length round the object (m), so the print repeats nowhere visible.
    """
    paper = colour(rng)
    ink = colour(rng, value=(0.1, 0.6))
    accent = colour(rng)
    out = background.copy() if background.ndim == 2 else plain(points, background)
    inside = (height >= low) & (height <= high)
    t = (height - low) / max(high - low, 1e-9)
    band = np.where(((t > 0.35) & (t < 0.6))[:, None], accent, paper)
    period = rng.uniform(0.01, 0.03)
    lines = ((t > 0.68) & (t < 0.85) & ((around / period) % 1.0 < 0.6)) | ((t > 0.1) & (t < 0.2))
    band = np.where(lines[:, None], ink, band)
    out[inside] = band[inside]
    return out


def by_style(style: str, points: np.ndarray, height: np.ndarray, around: np.ndarray, rng: np.random.Generator,
             base: np.ndarray) -> np.ndarray:
    """One of :data:`STYLES` on a surface described by height and arc length round it."""
    if style == "plain":
        return plain(points, base)
    if style == "stripes":
        return stripes(height if rng.uniform() < 0.6 else around, rng.uniform(0.008, 0.03), base, colour(rng),
                       duty=rng.uniform(0.3, 0.7))
    if style == "label":
        top = height.max()
        low = rng.uniform(0.1, 0.35) * top
        return label(points, height, around, rng, low, low + rng.uniform(0.3, 0.55) * top, plain(points, base))
    if style == "noise":
        return noise(points, rng, base, amount=rng.uniform(0.1, 0.35), frequency=rng.uniform(8, 40))
    raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")


def around_z(points: np.ndarray) -> np.ndarray:
    """Arc length round the z axis at each point's radius (m)."""
    return np.arctan2(points[:, 1], points[:, 0]) * np.hypot(points[:, 0], points[:, 1])
