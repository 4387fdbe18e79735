"""Round things: fruit (apple, orange, lemon, pear, plum), bananas, balls.

Fruit are revolved polar profiles with dimples and stems, then bent by a smooth radial noise (a
multiplicative change of distance along each ray from the centre, which cannot fold the surface).
"""
from __future__ import annotations

import numpy as np

from mar3d.data.household import geometry as g
from mar3d.data.household import paint

SEGMENTS = 48
KINDS = ("apple", "orange", "lemon", "pear", "plum")
HUES = {"apple": (-0.05, 0.3), "orange": (0.05, 0.1), "lemon": (0.12, 0.17), "pear": (0.13, 0.27),
        "plum": (0.75, 0.95)}


def _polar_profile(kind: str, rng) -> np.ndarray:
    """(r, z) profile from the bottom pole to the top, a function of the polar angle (0 = bottom)."""
    phi = np.linspace(0, np.pi, 40)
    bottom, top = np.exp(-(phi / 0.35) ** 2), np.exp(-((np.pi - phi) / 0.4) ** 2)
    radius = np.ones_like(phi)
    stretch = 1.0
    if kind == "apple":
        radius = 1 - rng.uniform(0.1, 0.2) * bottom - rng.uniform(0.3, 0.45) * top + 0.08 * np.sin(phi) ** 4
    elif kind == "orange":
        stretch = rng.uniform(0.85, 1.0)
    elif kind == "lemon":
        radius = 1 + rng.uniform(0.15, 0.3) * (np.exp(-(phi / 0.2) ** 2) + np.exp(-((np.pi - phi) / 0.2) ** 2))
        stretch = rng.uniform(1.15, 1.4)
    elif kind == "pear":  # wide bottom, narrow neck: radius shrinks towards the top
        radius = 1 - rng.uniform(0.35, 0.5) * np.clip((phi - 1.2) / 1.6, 0, 1) ** 1.5 - 0.15 * top
        stretch = rng.uniform(1.3, 1.6)
    elif kind == "plum":
        radius = 1 - 0.12 * top
        stretch = rng.uniform(1.0, 1.15)
    points = np.stack([radius * np.sin(phi), -radius * np.cos(phi) * stretch], 1)
    points[0, 0] = points[-1, 0] = 0.0
    if kind in ("apple", "pear"):  # a stem from the top dimple
        tip = points[-1]
        length = rng.uniform(0.15, 0.35)
        stem = np.array([[0.035, tip[1]], [0.03, tip[1] + length], [0.0, tip[1] + length + 0.02]])
        points = np.concatenate([points[:-1], stem])
    return points


def sphere_noise(directions: np.ndarray, rng, frequency: float = 0.5) -> np.ndarray:
    """Smooth noise on the unit sphere (a function of direction only)."""
    return paint.smooth_noise(directions, rng, frequency, waves=5)


def fruit(rng):
    kind = KINDS[rng.integers(len(KINDS))]
    size = {"apple": (0.035, 0.048), "orange": (0.035, 0.05), "lemon": (0.026, 0.034), "pear": (0.03, 0.042),
            "plum": (0.022, 0.03)}[kind]
    scale = rng.uniform(*size)
    body, _ = g.revolve(_polar_profile(kind, rng) * scale, SEGMENTS)
    centre = np.array([0, 0, body.vertices[:, 2].min() + scale])
    offset = body.vertices - centre
    distance = np.linalg.norm(offset, axis=1, keepdims=True)
    bumps = 1 + rng.uniform(0.02, 0.06) * sphere_noise(offset / np.maximum(distance, 1e-12), rng)
    body.vertices = centre + offset * bumps[:, None] * [1, rng.uniform(0.92, 1.0), 1]

    points = body.vertices
    skin = paint.colour(rng, HUES[kind], saturation=(0.6, 0.95), value=(0.65, 0.95))
    colours = paint.noise(points, rng, skin, amount=rng.uniform(0.05, 0.15), frequency=rng.uniform(15, 40))
    if kind == "apple" and rng.uniform() < 0.6:  # a blush of a second colour on one side
        blush = paint.colour(rng, (-0.03, 0.03), saturation=(0.7, 1), value=(0.5, 0.8))
        side = np.clip(0.5 + 0.5 * paint.smooth_noise(points, rng, 8, 3), 0, 1)[:, None]
        colours = (1 - side) * colours + side * blush
    stem = (np.hypot(points[:, 0], points[:, 1]) < 0.05 * scale) & (points[:, 2] > centre[2])
    colours[stem] = (0.3, 0.2, 0.1)
    return body, colours


def banana(rng):
    length = rng.uniform(0.15, 0.22)
    bend = rng.uniform(0.6, 1.3)  # radians of arc
    thickness = rng.uniform(0.016, 0.022)
    arc = length / bend
    s = np.linspace(0, 1, 60)
    angle = (s - 0.5) * bend
    centres = np.stack([arc * np.sin(angle), arc * (1 - np.cos(angle)), np.zeros_like(s)], 1)
    radius = thickness * np.clip(np.sin(np.pi * s), 0, 1) ** 0.6
    radius[[0, -1]] = thickness * 0.12  # blunt stem and tip
    ridge = 1 + 0.06 * np.cos(5 * np.linspace(0, 2 * np.pi, 20, endpoint=False))
    section = g.superellipse(20, 1, 1) * ridge[:, None]
    sections = radius[:, None, None] * section[None]
    body = g.sweep(centres, sections, normal=(0, 0, 1))
    body.vertices[:, 2] -= body.vertices[:, 2].min()

    points = body.vertices
    ripe = paint.colour(rng, (0.12, 0.2), saturation=(0.6, 0.95), value=(0.75, 0.95))
    colours = paint.noise(points, rng, ripe, amount=rng.uniform(0.08, 0.25), frequency=rng.uniform(20, 50))
    along = np.interp(points[:, 0], [centres[0, 0], centres[-1, 0]], [0, 1])
    colours[(along < 0.08) | (along > 0.95)] = (0.3, 0.25, 0.1)
    return body, colours


def ball(rng):
    radius = rng.uniform(0.02, 0.11)
    phi = np.linspace(0, np.pi, 36)
    body, _ = g.revolve(np.stack([np.sin(phi), 1 - np.cos(phi)], 1) * radius, SEGMENTS)
    points = body.vertices
    first = paint.colour(rng)
    pattern = rng.integers(4)
    if pattern == 0:  # beach ball: coloured segments round the axis
        sector = np.floor((np.arctan2(points[:, 1], points[:, 0]) + np.pi) / (2 * np.pi) * 6).astype(int) % 6
        palette = np.stack([paint.colour(rng) for _ in range(3)])
        colours = palette[sector % 3]
    elif pattern == 1:
        colours = paint.stripes(points[:, 2], radius * rng.uniform(0.2, 0.6), first, paint.colour(rng))
    elif pattern == 2:
        colours = paint.noise(points, rng, first, amount=0.3, frequency=rng.uniform(10, 40))
    else:
        colours = paint.plain(points, first)
    return body, colours
