"""Boxes and toys: printed boxes (cereal, small, flat), toy blocks, stacking-ring towers."""
from __future__ import annotations

import numpy as np

from mar3d.data.household import geometry as g
from mar3d.data.household import paint

KINDS = {  # half extents (m): x, y (depth), z (up)
    "cereal": ((0.07, 0.1), (0.025, 0.04), (0.1, 0.15)),
    "small": ((0.02, 0.06), (0.015, 0.04), (0.02, 0.07)),
    "flat": ((0.05, 0.15), (0.05, 0.12), (0.01, 0.025)),
}


def _printed(points: np.ndarray, half: np.ndarray, rng) -> np.ndarray:
    """A box print: background, a panel on the large faces, bands of 'text' and a logo stripe."""
    background = paint.colour(rng)
    colours = paint.noise(points, rng, background, amount=0.08, frequency=15) if rng.uniform() < 0.5 \
        else paint.plain(points, background)
    local = points / half
    panel = (np.abs(local[:, 0]) < rng.uniform(0.5, 0.85)) & (np.abs(local[:, 2] - rng.uniform(-0.3, 0.3)) < 0.4)
    colours[panel] = paint.colour(rng)
    band_at = rng.uniform(-0.9, 0.6)
    colours[(local[:, 2] > band_at) & (local[:, 2] < band_at + rng.uniform(0.08, 0.25))] = paint.colour(rng)
    text = (np.abs(local[:, 2] - rng.uniform(0.5, 0.85)) < 0.06) & ((points[:, 0] / 0.012) % 1.0 < 0.55)
    colours[text] = paint.colour(rng, value=(0.05, 0.4))
    return colours


def box(rng):
    kind = list(KINDS)[rng.integers(len(KINDS))]
    half = np.array([rng.uniform(*r) for r in KINDS[kind]])
    body, _ = g.rounded_box(half, min(half.min() * 0.4, rng.uniform(0.001, 0.006)), 0.005)
    colours = _printed(body.vertices, half, rng)
    body.vertices[:, 2] += half[2]
    return body, colours


def toy_block(rng):
    half = rng.uniform(0.0125, 0.03) * np.array([1, *rng.choice([1, 1, 1, 2, 0.5], 2)])
    body, _ = g.rounded_box(half, half.min() * rng.uniform(0.1, 0.35), 0.003)
    points = body.vertices
    if rng.uniform() < 0.5:  # a different colour on each pair of opposite faces
        faces = np.argmax(np.abs(points / half), axis=1)
        colours = np.stack([paint.colour(rng, value=(0.7, 1)) for _ in range(3)])[faces]
    else:
        colours = paint.by_style(["plain", "stripes", "noise"][rng.integers(3)], points, points[:, 2],
                                 points[:, 0] + points[:, 1], rng, paint.colour(rng, value=(0.7, 1)))
    body.vertices[:, 2] += half[2]
    return body, colours


def toy_stack(rng):
    """A stacking toy as one revolved profile: a base, rings of shrinking radius, a knob on top."""
    base_r, base_h = rng.uniform(0.035, 0.06), rng.uniform(0.008, 0.015)
    rings = int(rng.integers(3, 7))
    ring_h = rng.uniform(0.012, 0.022)
    peg = base_r * rng.uniform(0.18, 0.28)
    corners, radii = [(0, 0), (base_r, 0), (base_r, base_h)], [0, 0.003, 0.003]
    z = base_h
    for k in range(rings):  # each ring bulges out from the peg: a V-shaped groove between two rings
        r = base_r * (0.95 - 0.55 * k / max(rings - 1, 1))
        corners += [(peg, z), (r, z + 0.1 * ring_h), (r, z + 0.9 * ring_h)]
        radii += [0, ring_h * 0.45, ring_h * 0.45]
        z += ring_h
    corners.append((peg, z))
    radii.append(0)
    knob = peg * rng.uniform(1.3, 2.0)
    corners += [(knob, z + 0.5 * knob), (0, z + 1.6 * knob)]
    radii += [knob * 0.8, 0]
    profile = g.rounded_polyline(corners, radii, 0.002)
    body, _ = g.revolve(profile, 48)
    points = body.vertices
    level = np.clip(((points[:, 2] - base_h) // ring_h).astype(int), -1, rings) + 1
    palette = np.stack([paint.colour(rng, value=(0.7, 1)) for _ in range(rings + 2)])
    return body, palette[level]
