"""Hand tools lying on the table: hammers, screwdrivers, spatulas, wrenches.

Flat tools are sweeps of rounded-rectangle sections whose width and thickness change along the tool; the
hammer's handle is a tube stitched into a hole in the bottom of its rounded-box head (one closed surface).
"""
from __future__ import annotations

import numpy as np

from mar3d.data.household import geometry as g
from mar3d.data.household import paint

METAL = (0.25, 0.75)  # value range of unpainted steel


def metal(rng) -> np.ndarray:
    return np.full(3, rng.uniform(*METAL))


def _lay_down(body: g.Body) -> None:
    """Rotate a tool built standing along +z so that it lies along x (a proper rotation about y)."""
    body.vertices = body.vertices[:, [2, 1, 0]] * [1, 1, -1]


def _flat_tool(length_profile, width, thickness, bend=None, power=6.0) -> g.Body:
    """Sweep along x (in the x-z plane) with half widths (along y) and half thicknesses (along z)."""
    x = np.asarray(length_profile)
    z = np.zeros_like(x) if bend is None else bend
    centres = np.stack([x, np.zeros_like(x), z], 1)
    unit = g.superellipse(24, 1, 1, power)
    sections = unit[None] * np.stack([width, thickness], 1)[:, None]
    return g.sweep(centres, sections, normal=(0, 1, 0))


def spatula(rng):
    handle, neck, blade = rng.uniform(0.1, 0.16), rng.uniform(0.03, 0.06), rng.uniform(0.06, 0.1)
    x = np.linspace(0, handle + neck + blade, 90)
    width = np.interp(x, [0, 0.004, handle, handle + neck, handle + neck + 0.02, x[-1]],
                      [0.006, rng.uniform(0.009, 0.014), 0.01, 0.006, rng.uniform(0.025, 0.045),
                       rng.uniform(0.03, 0.05)])
    thickness = np.interp(x, [0, 0.004, handle, handle + neck, x[-1]],
                          [0.004, rng.uniform(0.005, 0.008), 0.005, 0.003, rng.uniform(0.0012, 0.0025)])
    drop = rng.uniform(0.0, 0.03)  # the blade bent down towards the table
    bend = -drop * np.clip((x - handle) / neck, 0, 1) ** 2
    body = _flat_tool(x, width, thickness, bend)
    points = body.vertices
    first = paint.colour(rng)
    colours = paint.plain(points, first)
    if rng.uniform() < 0.5:
        colours[points[:, 0] > handle] = paint.colour(rng) if rng.uniform() < 0.5 else metal(rng)
    return body, colours


def wrench(rng):
    length = rng.uniform(0.1, 0.25)
    shaft_w, head_w = rng.uniform(0.006, 0.01), rng.uniform(0.013, 0.022)
    x = np.linspace(0, length, 100)
    ends = np.minimum(x, length - x)
    head = np.exp(-((ends - head_w) / (1.4 * head_w)) ** 2)
    width = shaft_w + (head_w - shaft_w) * head
    cap = np.clip(ends / head_w, 0, 1)
    width = width * np.sqrt(np.clip(1 - (1 - cap) ** 2, 0.02, 1))  # round ends
    thickness = np.full_like(x, rng.uniform(0.0025, 0.004))
    body = _flat_tool(x, width, thickness, power=rng.uniform(3, 8))
    points = body.vertices
    colours = paint.noise(points, rng, metal(rng), amount=0.05, frequency=30)
    return body, colours


def screwdriver(rng):
    handle_r, handle_l = rng.uniform(0.01, 0.018), rng.uniform(0.07, 0.11)
    shaft_r, shaft_l = rng.uniform(0.0018, 0.004), rng.uniform(0.05, 0.16)
    end = handle_l + shaft_l
    corners = [(0, 0), (handle_r * 0.9, 0), (handle_r, 0.3 * handle_l), (handle_r * 0.85, handle_l),
               (shaft_r * 1.8, handle_l + 0.006), (shaft_r, handle_l + 0.012), (shaft_r, end - 0.008),
               (shaft_r * 0.5, end), (0, end)]
    radii = [0, handle_r * 0.6, handle_l * 0.5, handle_r * 0.5, 0.003, 0.002, 0.0, 0.0, 0]
    body, _ = g.revolve(g.rounded_polyline(corners, radii, 0.002), 32)
    tip = np.clip((body.vertices[:, 2] - (end - 0.012)) / 0.012, 0, 1)
    body.vertices[:, 1] *= 1 - 0.65 * tip  # flat blade at the tip
    points = body.vertices
    grip = paint.colour(rng)
    colours = paint.by_style(["plain", "stripes", "noise"][rng.integers(3)], points, points[:, 2],
                             paint.around_z(points), rng, grip)
    colours[points[:, 2] > handle_l + 0.003] = metal(rng)
    _lay_down(body)
    return body, colours


def hammer(rng):
    head = np.array([rng.uniform(0.045, 0.07), rng.uniform(0.011, 0.016), rng.uniform(0.011, 0.018)])
    rounding = 0.003
    grip = np.array([rng.uniform(0.009, 0.013), (head[1] - rounding) * rng.uniform(0.6, 0.8)])
    body, grids = g.rounded_box(head, rounding, 0.004, marks={0: (-grip[0], grip[0]), 1: (-grip[1], grip[1])})
    ids = grids[(2, -1)]  # the bottom face, a grid over x and y
    xs, ys = body.vertices[ids[:, 0], 0], body.vertices[ids[0, :], 1]
    r0, r1 = (int(np.argmin(np.abs(xs - v))) for v in (-grip[0], grip[0]))
    c0, c1 = (int(np.argmin(np.abs(ys - v))) for v in (-grip[1], grip[1]))
    loop = g.cut_hole(body, ids, (r0, r1), (c0, c1))

    length = rng.uniform(0.2, 0.33)
    s = np.linspace(0, 1, 40)[1:]
    local = body.vertices[loop, :2]
    angle = np.arctan2(local[:, 1] / grip[1], local[:, 0] / grip[0])
    oval = np.stack([np.cos(angle), np.sin(angle)], 1) * grip * 0.95
    blend = np.clip(s / 0.05, 0, 1)[:, None, None]
    swell = (1 + 0.25 * np.clip((s - 0.5) / 0.3, 0, 1))[:, None, None]  # a thicker grip
    section = ((1 - blend) * local + blend * oval) * swell
    z = -head[2] - length * s
    rings = np.concatenate([section, np.broadcast_to(z[:, None, None], section.shape[:2] + (1,))], axis=2)
    g.stitch(body, [loop, *body.add_vertices(rings)], end_pole=(0, 0, z[-1] - 0.004))

    points = body.vertices
    colours = paint.plain(points, metal(rng))
    handle_colour = paint.colour(rng, (0.05, 0.12), value=(0.4, 0.8)) if rng.uniform() < 0.5 else paint.colour(rng)
    below = points[:, 2] < -head[2] - 0.002
    colours[below] = paint.noise(points[below], rng, handle_colour, amount=0.15, frequency=25)
    _lay_down(body)
    return body, colours
