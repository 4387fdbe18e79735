"""Revolved containers: cans, bottles, jars, cups, mugs (with a fused handle), bowls, plates.

Each builder takes a generator and returns ``(body, colours)``: a closed surface in metres, z up, and
(V, 3) RGB per vertex. Profiles run from the bottom pole out, up the outside and back to the axis.
"""
from __future__ import annotations

import numpy as np

from mar3d.data.household import geometry as g
from mar3d.data.household import paint

STEP = 0.003  # profile sampling (m): fine enough for 1-2 mm rims and for painted bands
SEGMENTS = 64


def profile_rows(body: g.Body, rings: np.ndarray, n_profile: int) -> np.ndarray:
    """Per vertex, the index of the profile point it was revolved from (poles: 0 and the last)."""
    rows = np.zeros(len(body.vertices))
    rows[rings] = np.arange(1, n_profile - 1)[:, None]
    rows[rings.max() + 2] = n_profile - 1  # revolve adds the start pole, then the end pole
    return rows


def _body_colours(rng, points, style=None, styles=paint.STYLES) -> np.ndarray:
    style = style or styles[rng.integers(len(styles))]
    return paint.by_style(style, points, points[:, 2], paint.around_z(points), rng, paint.colour(rng))


def can(rng):
    radius = rng.uniform(0.025, 0.055)
    height = float(np.clip(radius * rng.uniform(0.6, 3.2), 0.035, 0.16))
    r, h = radius, height
    corners = [(0, 0.003), (r - 0.006, 0.003), (r - 0.003, 0), (r, 0.006), (r, h - 0.006), (r - 0.0015, h),
               (r - 0.004, h), (r - 0.005, h - 0.003), (0, h - 0.003)]
    radii = [0, 0.002, 0.001, 0.003, 0.002, 0.0007, 0.0007, 0.001, 0]
    body, _ = g.revolve(g.rounded_polyline(corners, radii, STEP), SEGMENTS)
    points = body.vertices
    metal = np.full(3, rng.uniform(0.55, 0.8))
    colours = _body_colours(rng, points, styles=("label", "label", "stripes", "plain", "noise"))
    ends = (points[:, 2] < 0.007) | (points[:, 2] > h - 0.007)
    colours[ends] = metal
    return body, colours


def bottle(rng):
    r = rng.uniform(0.022, 0.045)
    h = rng.uniform(4.0, 7.0) * r
    shoulder = rng.uniform(0.5, 0.75) * h
    neck_r = max(0.009, rng.uniform(0.25, 0.45) * r)
    cap_h = rng.uniform(0.012, 0.03)
    neck = shoulder + rng.uniform(0.35, 0.8) * (h - cap_h - shoulder)
    top = h - cap_h
    cap_r = neck_r + 0.002
    corners = [(0, 0.002), (r - 0.004, 0), (r, 0.006), (r, shoulder), (neck_r, neck), (neck_r, top),
               (cap_r, top), (cap_r, h), (0, h)]
    radii = [0, 0.003, 0.003, rng.uniform(0.2, 0.8) * r, 0.008, 0, 0, 0.002, 0]
    body, _ = g.revolve(g.rounded_polyline(corners, radii, STEP), SEGMENTS)
    points = body.vertices
    colours = _body_colours(rng, points)
    colours[points[:, 2] > top - 1e-6] = paint.colour(rng)
    if rng.uniform() < 0.4:  # a squeezed, oval bottle (detergent, mustard)
        body.vertices = body.vertices * [rng.uniform(0.55, 0.85), 1, 1]
    return body, colours


def jar(rng):
    r = rng.uniform(0.03, 0.06)
    h = r * rng.uniform(1.2, 3.0)
    lid_h = rng.uniform(0.012, 0.025)
    neck_r = r * rng.uniform(0.75, 0.92)
    shoulder = h - lid_h - rng.uniform(0.008, 0.015)
    lid_r = neck_r + 0.003
    corners = [(0, 0.002), (r - 0.004, 0), (r, 0.006), (r, shoulder), (neck_r, h - lid_h), (lid_r, h - lid_h),
               (lid_r, h), (0, h)]
    radii = [0, 0.003, 0.003, 0.008, 0, 0, 0.003, 0]
    body, _ = g.revolve(g.rounded_polyline(corners, radii, STEP), SEGMENTS)
    points = body.vertices
    colours = _body_colours(rng, points, styles=("label", "label", "noise", "plain"))
    colours[points[:, 2] > h - lid_h - 1e-6] = paint.colour(rng)
    return body, colours


def _dish(rng, radius, height, foot_r, foot_h, wall, floor, flat_r):
    """Outer wall: a quarter ellipse from the foot to the rim; inner: one from the flat floor, inside it."""
    theta = np.linspace(0, np.pi / 2, max(8, int(np.pi / 2 * radius / STEP)))
    up, out = 1 - np.cos(theta), np.sin(theta)
    outer = np.stack([foot_r + (radius - foot_r) * out, foot_h + (height - foot_h) * up], 1)
    inner = np.stack([flat_r + (radius - wall - flat_r) * out, floor + (height - floor) * up], 1)
    base = g.resample_straight(np.array([(0, 0), (foot_r, 0), (foot_r, foot_h)]), STEP)
    centre = g.resample_straight(np.array([(flat_r, floor), (0, floor)]), STEP)
    profile = np.concatenate([base[:-1], outer, inner[::-1], centre[1:]])
    body, rings = g.revolve(profile, SEGMENTS)
    rows = profile_rows(body, rings, len(profile))
    inside = rows >= len(base) - 1 + len(outer)
    points = body.vertices
    colours = _body_colours(rng, points, styles=("plain", "plain", "stripes", "noise"))
    if rng.uniform() < 0.5:
        colours[inside] = paint.colour(rng, saturation=(0, 0.15), value=(0.85, 1.0))
    return body, colours


def bowl(rng):
    radius = rng.uniform(0.055, 0.11)
    height = radius * rng.uniform(0.45, 0.8)
    return _dish(rng, radius, height, radius * rng.uniform(0.3, 0.5), 0.006, rng.uniform(0.003, 0.006),
                 0.012, 0.0)


def plate(rng):
    radius = rng.uniform(0.08, 0.14)
    height = rng.uniform(0.015, 0.03)
    foot_r = radius * rng.uniform(0.45, 0.65)
    return _dish(rng, radius, height, foot_r, 0.003, 0.004, 0.007, foot_r * rng.uniform(0.6, 1.0))


def cup(rng):
    top = rng.uniform(0.03, 0.05)
    bottom = top * rng.uniform(0.6, 0.95)
    h = rng.uniform(0.07, 0.13)
    wall, floor = rng.uniform(0.002, 0.004), rng.uniform(0.004, 0.008)
    inner_bottom = bottom + (top - bottom) * floor / h - wall
    corners = [(0, 0), (bottom, 0), (top, h), (top - wall, h), (inner_bottom, floor), (0, floor)]
    radii = [0, 0.004, wall / 2, wall / 2, 0.004, 0]
    body, _ = g.revolve(g.rounded_polyline(corners, radii, STEP), SEGMENTS)
    return body, _body_colours(rng, body.vertices)


def mug(rng):
    """A straight mug whose handle is a tube stitched into two rectangular holes in the outer wall.

    The handle leaves the upper hole along the wall's outward normal, bends down along half an ellipse
    and enters the lower hole: one closed surface of genus 1, no boolean needed.
    """
    r, h = rng.uniform(0.035, 0.05), rng.uniform(0.08, 0.115)
    wall, floor = rng.uniform(0.004, 0.006), rng.uniform(0.006, 0.01)
    corners = [(0, 0), (r, 0), (r, h), (r - wall, h), (r - wall, floor), (0, floor)]
    radii = [0, 0.006, wall / 2, wall / 2, 0.004, 0]
    profile = g.rounded_polyline(corners, radii, STEP)
    half_cols = 2  # the holes are 4 segments wide
    body, rings = g.revolve(profile, SEGMENTS, theta0=-half_cols * 2 * np.pi / SEGMENTS)
    straight = np.flatnonzero((np.abs(profile[1:-1, 0] - r) < 1e-9) & (profile[1:-1, 1] < h - 0.01))
    tall = 3  # rows per hole
    upper = straight[np.searchsorted(profile[1:-1, 1][straight], rng.uniform(0.62, 0.75) * h)] - tall
    lower = straight[np.searchsorted(profile[1:-1, 1][straight], rng.uniform(0.15, 0.28) * h)]
    cols = (0, 2 * half_cols)
    loop_up = g.cut_hole(body, rings, (upper, upper + tall), cols)
    g.cut_hole(body, rings, (lower, lower + tall), cols)
    # The ring vertex at (column, row) of the upper hole meets the lower hole at the mirrored row.
    at = np.array([np.argwhere(rings == v)[0] for v in loop_up])
    loop_end = rings[lower + tall - (at[:, 0] - upper), at[:, 1]]

    top_z = body.vertices[loop_up, 2].mean()
    bottom_z = body.vertices[loop_end, 2].mean()
    reach = rng.uniform(0.025, 0.04)
    local = np.stack([body.vertices[loop_up, 1], body.vertices[loop_up, 2] - top_z], 1)
    extent = np.abs(local).max(axis=0)
    angle = np.arctan2(local[:, 1] / extent[1], local[:, 0] / extent[0])
    rounded = np.stack([np.cos(angle), np.sin(angle)], 1) * extent * rng.uniform(0.7, 0.95)
    s = np.linspace(0, 1, 26)[1:-1]
    centres = np.stack([r + reach * np.sin(np.pi * s), np.zeros_like(s),
                        (top_z + bottom_z) / 2 + (top_z - bottom_z) / 2 * np.cos(np.pi * s)], 1)
    tangent = np.stack([np.pi * reach * np.cos(np.pi * s), np.zeros_like(s),
                        -np.pi * (top_z - bottom_z) / 2 * np.sin(np.pi * s)], 1)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    v = np.stack([-tangent[:, 2], np.zeros_like(s), tangent[:, 0]], 1)
    blend = np.clip(np.minimum(s, 1 - s) / 0.2, 0, 1)[:, None, None]
    section = (1 - blend) * local + blend * rounded
    rings_between = (centres[:, None] + section[..., :1] * np.array([0, 1.0, 0]) + section[..., 1:] * v[:, None])
    g.stitch(body, [loop_up, *body.add_vertices(rings_between), loop_end])

    points = body.vertices
    colours = _body_colours(rng, points, styles=("plain", "plain", "stripes", "label", "noise"))
    if rng.uniform() < 0.4:
        inside = (np.hypot(points[:, 0], points[:, 1]) < r - wall / 2) & (points[:, 2] > floor / 2)
        colours[inside & (points[:, 2] < h - wall / 2)] = paint.colour(rng, saturation=(0, 0.1), value=(0.9, 1))
    return body, colours
