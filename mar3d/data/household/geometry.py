"""Closed triangle surfaces built from rows of vertex loops: revolved profiles, sweeps, rounded boxes.

Every shape here is a stack of closed vertex loops ("rows") joined by quads, ended by a pole (a fan) or
stitched into a hole of another shape. Built that way, a surface is watertight and consistently wound by
construction; ``Body.oriented`` then turns it outward by the sign of its volume.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Body:
    """A triangle surface under construction: (V, 3) float vertices, (F, 3) int faces."""

    vertices: np.ndarray
    faces: np.ndarray

    def add_vertices(self, points: np.ndarray) -> np.ndarray:
        """Append (..., 3) points; returns their indices with the same leading shape."""
        points = np.asarray(points, dtype=np.float64)
        start = len(self.vertices)
        self.vertices = np.concatenate([self.vertices, points.reshape(-1, 3)])
        return np.arange(start, start + points.size // 3).reshape(points.shape[:-1])

    def add_faces(self, faces: np.ndarray) -> None:
        self.faces = np.concatenate([self.faces, np.asarray(faces, dtype=np.int64).reshape(-1, 3)])

    def volume(self) -> float:
        tri = self.vertices[self.faces]
        return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6)

    def oriented(self) -> "Body":
        """The same surface with faces wound so that normals point out (positive volume)."""
        return self if self.volume() > 0 else Body(self.vertices, self.faces[:, ::-1].copy())


def empty() -> Body:
    return Body(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64))


def row_faces(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two triangles per quad between closed loops ``a`` and ``b`` (same length, matching order)."""
    a1, b1 = np.roll(a, -1), np.roll(b, -1)
    return np.concatenate([np.stack([a, a1, b], 1), np.stack([a1, b1, b], 1)])


def fan_faces(pole: int, row: np.ndarray, start: bool) -> np.ndarray:
    """Triangles closing a loop at a pole; ``start`` for a pole before the first row, else after the last."""
    row1 = np.roll(row, -1)
    pole = np.full_like(row, pole)
    return np.stack([pole, row1, row], 1) if start else np.stack([row, row1, pole], 1)


def stack(body: Body, rows: list[np.ndarray], start_pole=None, end_pole=None) -> None:
    """Join consecutive index loops with quads; close the ends with poles (points) where given."""
    for a, b in zip(rows[:-1], rows[1:]):
        body.add_faces(row_faces(a, b))
    if start_pole is not None:
        body.add_faces(fan_faces(int(body.add_vertices(np.asarray(start_pole)[None])[0]), rows[0], start=True))
    if end_pole is not None:
        body.add_faces(fan_faces(int(body.add_vertices(np.asarray(end_pole)[None])[0]), rows[-1], start=False))


def tube(rings: np.ndarray, start_pole=None, end_pole=None) -> tuple[Body, np.ndarray]:
    """A surface through (K, L, 3) rings of points; returns it and the (K, L) vertex indices of the rings."""
    body = empty()
    index = body.add_vertices(rings)
    stack(body, list(index), start_pole, end_pole)
    return body, index


def revolve(profile: np.ndarray, segments: int, theta0: float = 0.0) -> tuple[Body, np.ndarray]:
    """Revolve an (r, z) profile about the z axis; its first and last points must lie on the axis (r = 0).

    The profile goes from the bottom pole out and round to the other pole without crossing itself, so
    the result is a closed genus-0 surface. Returns it and the (P - 2, segments) ring vertex indices.
    """
    theta = theta0 + np.arange(segments) * 2 * np.pi / segments
    inner = profile[1:-1]
    rings = np.stack([inner[:, :1] * np.cos(theta), inner[:, :1] * np.sin(theta),
                      np.repeat(inner[:, 1:], segments, axis=1)], axis=-1)
    return tube(rings, start_pole=(0, 0, profile[0, 1]), end_pole=(0, 0, profile[-1, 1]))


def rounded_polyline(corners, radii, step: float) -> np.ndarray:
    """(N, 2) points along straight segments between ``corners`` with each inner corner rounded.

    ``radii[i]`` is the fillet radius at corner i (ends ignored; shrunk where segments are too short).
    Points are about ``step`` apart, so straight runs are sampled uniformly.
    """
    corners = np.asarray(corners, dtype=np.float64)
    pieces = [corners[:1]]
    for i in range(1, len(corners) - 1):
        p, prev, nxt = corners[i], corners[i - 1], corners[i + 1]
        d1, d2 = prev - p, nxt - p
        l1, l2 = np.linalg.norm(d1), np.linalg.norm(d2)
        d1, d2 = d1 / l1, d2 / l2
        half = np.arccos(np.clip(d1 @ d2, -1, 1)) / 2
        if radii[i] <= 0 or half > np.pi / 2 - 1e-6:
            pieces.append(p[None])
            continue
        tangent = min(radii[i] / np.tan(half), 0.45 * min(l1, l2))
        radius = tangent * np.tan(half)
        center = p + (d1 + d2) / np.linalg.norm(d1 + d2) * radius / np.sin(half)
        t1, t2 = p + d1 * tangent, p + d2 * tangent
        a1 = np.arctan2(*(t1 - center)[::-1])
        a2 = np.arctan2(*(t2 - center)[::-1])
        delta = (a2 - a1 + np.pi) % (2 * np.pi) - np.pi
        n = max(2, int(np.ceil(abs(delta) * radius / step)) + 1)
        angles = a1 + delta * np.linspace(0, 1, n)
        pieces.append(center + radius * np.stack([np.cos(angles), np.sin(angles)], 1))
    pieces.append(corners[-1:])
    return resample_straight(np.concatenate(pieces), step)


def resample_straight(points: np.ndarray, step: float) -> np.ndarray:
    """Subdivide every segment longer than ``step`` evenly; drop repeated points."""
    out = [points[:1]]
    for a, b in zip(points[:-1], points[1:]):
        n = int(np.ceil(np.linalg.norm(b - a) / step))
        if n >= 1:
            out.append(a + (b - a) * (np.arange(1, n + 1) / n)[:, None])
    return np.concatenate(out)


def superellipse(count: int, a: float, b: float, power: float = 2.0) -> np.ndarray:
    """(count, 2) points of |x/a|^p + |y/b|^p = 1 (p = 2: ellipse, larger: rounded rectangle), CCW."""
    phi = np.arange(count) * 2 * np.pi / count
    c, s = np.cos(phi), np.sin(phi)
    return np.stack([a * np.sign(c) * np.abs(c) ** (2 / power), b * np.sign(s) * np.abs(s) ** (2 / power)], 1)


def path_frames(centers: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cross-section axes (u, v) along a path lying in the plane with the given ``normal``: u = normal."""
    tangent = np.gradient(centers, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    u = np.broadcast_to(np.asarray(normal, dtype=np.float64), centers.shape)
    v = np.cross(tangent, u)
    return u, v


def sweep(centers: np.ndarray, sections: np.ndarray, normal=(0.0, 0.0, 1.0)) -> Body:
    """Sweep (K, L, 2) cross-sections along a planar (K, 3) path, closed by flat fans at both ends."""
    u, v = path_frames(centers, np.asarray(normal, dtype=np.float64))
    rings = centers[:, None] + sections[..., :1] * u[:, None] + sections[..., 1:] * v[:, None]
    return tube(rings, start_pole=rings[0].mean(axis=0), end_pole=rings[-1].mean(axis=0))[0]


def rounded_box(half, radius: float, step: float, marks=None) -> tuple[Body, dict]:
    """A box of half extents ``half`` with edges and corners rounded by ``radius``, as a quad grid.

    ``marks`` maps an axis (0, 1, 2) to coordinates that the flat faces' grid lines must pass through
    (to cut exact holes). Returns the body and, per face (axis, sign), the (n_b, n_c) vertex indices of
    its grid over the two other axes in increasing order.
    """
    half = np.asarray(half, dtype=np.float64)
    inner = half - radius
    marks = marks or {}
    offsets, normals = [], []
    arc = max(2, int(np.ceil(np.pi / 2 * radius / step)))
    bend = np.tan(np.pi / 4 * np.arange(1, arc) / arc)  # normal tilt of the arc rows, increasing
    for axis in range(3):
        stops = sorted({-inner[axis], inner[axis], *marks.get(axis, ())})
        flat = resample_straight(np.array(stops)[:, None], step)[:, 0]
        offsets.append(np.concatenate([np.full(arc, -inner[axis]), flat, np.full(arc, inner[axis])]))
        normals.append(np.concatenate([-1.0, -bend[::-1], np.zeros(len(flat)), bend, 1.0], axis=None))
    sizes = [len(o) for o in offsets]
    key_to_vertex: dict[tuple, int] = {}
    body, grids = empty(), {}
    for axis in range(3):
        b, c = [a for a in range(3) if a != axis]
        for sign, end in ((-1, 0), (1, sizes[axis] - 1)):
            ib, ic = np.meshgrid(np.arange(sizes[b]), np.arange(sizes[c]), indexing="ij")
            ids = np.empty(ib.shape, dtype=np.int64)
            for pos in np.ndindex(ib.shape):
                key = [0, 0, 0]
                key[axis], key[b], key[c] = end, ib[pos], ic[pos]
                key = tuple(key)
                if key not in key_to_vertex:
                    offset = np.array([offsets[k][key[k]] for k in range(3)])
                    n = np.array([normals[k][key[k]] for k in range(3)])
                    key_to_vertex[key] = int(body.add_vertices((offset + radius * n / np.linalg.norm(n))[None])[0])
                ids[pos] = key_to_vertex[key]
            grids[(axis, sign)] = ids
            faces = grid_faces(ids)
            tri = body.vertices[faces]
            area = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).sum(axis=0)
            body.add_faces(faces if area[axis] * sign > 0 else faces[:, ::-1])
    return body, grids


def grid_faces(ids: np.ndarray) -> np.ndarray:
    """Two triangles per cell of an (n, m) grid of vertex indices."""
    a, b, c, d = (x.ravel() for x in (ids[:-1, :-1], ids[1:, :-1], ids[1:, 1:], ids[:-1, 1:]))
    return np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


def cut_hole(body: Body, ids: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Remove the grid cells between vertex rows ``rows`` and columns ``cols`` (inclusive) of ``ids``.

    Returns the hole's boundary loop of vertex indices, going round the rectangle in grid order.
    """
    (r0, r1), (c0, c1) = rows, cols
    inside = np.isin(body.faces, ids[r0:r1 + 1, c0:c1 + 1]).all(axis=1)
    body.faces = body.faces[~inside]
    return np.concatenate([ids[r0, c0:c1], ids[r0:r1, c1], ids[r1, c1:c0:-1], ids[r1:r0:-1, c0]])


def stitch(body: Body, rows: list[np.ndarray], end_pole=None) -> None:
    """Add quads joining index loops (the first one a hole's boundary), wound to match ``body``."""
    faces = np.concatenate([row_faces(a, b) for a, b in zip(rows[:-1], rows[1:])])
    if end_pole is not None:
        pole = int(body.add_vertices(np.asarray(end_pole, dtype=np.float64)[None])[0])
        faces = np.concatenate([faces, fan_faces(pole, rows[-1], start=False)])
    joined = np.concatenate([body.faces, faces])
    body.faces = joined if is_closed_and_consistent(joined) else np.concatenate([body.faces, faces[:, ::-1]])


def is_closed_and_consistent(faces: np.ndarray) -> bool:
    """Every directed edge once and its reverse once: watertight and consistently wound."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    keys = edges[:, 0] * (edges.max() + 1) + edges[:, 1]
    reverse = edges[:, 1] * (edges.max() + 1) + edges[:, 0]
    return len(np.unique(keys)) == len(keys) and bool(np.isin(reverse, keys).all())
