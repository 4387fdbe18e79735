"""Surface and occupancy samples of a normalized mesh (docs/method.md §3).

Inside/outside comes from the generalized winding number (libigl's fast approximation), which stays
meaningful for meshes with holes, open seams and self-intersections, where ray parity fails.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mar3d.data.normalize import DECODE_BOX

NEAR_SURFACE_FRACTION = 0.25
NEAR_SURFACE_SIGMAS = (0.005, 0.02)  # two noise scales, in normalized units
WINDING_INSIDE = 0.5


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform points on the triangles, with the unit normal of the face each lies on.

    Args:
        vertices: (V, 3) float; faces: (F, 3) int, wound outward.
    Returns:
        points (count, 3) float64, normals (count, 3) float64.
    """
    tri = vertices[faces]  # (F, 3, 3)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    double_area = np.linalg.norm(cross, axis=1)
    cdf = np.cumsum(double_area)
    face = np.searchsorted(cdf, rng.random(count) * cdf[-1], side="right")
    face = np.minimum(face, len(faces) - 1)
    # Uniform barycentric coordinates by folding the unit square onto the triangle.
    u, v = rng.random(count), rng.random(count)
    fold = u + v > 1
    u[fold], v[fold] = 1 - u[fold], 1 - v[fold]
    t = tri[face]
    points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    normals = cross[face] / np.maximum(double_area[face], 1e-300)[:, None]
    return points, normals


def winding_numbers(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Generalized winding number of each point, (Q,) float64; about 1 inside, 0 outside."""
    import igl  # here, not at the top: commands that never sample (train, generate) run without libigl

    return igl.fast_winding_number(
        np.ascontiguousarray(vertices, dtype=np.float64),
        np.ascontiguousarray(faces, dtype=np.int64),
        np.ascontiguousarray(points, dtype=np.float64),
    )


def inside_labels(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(Q,) uint8, 1 where the point is inside the surface (winding number > 0.5)."""
    return (winding_numbers(vertices, faces, points) > WINDING_INSIDE).astype(np.uint8)


@dataclass
class OccupancySamples:
    """Occupancy supervision: near-surface points first, then uniform points in the box."""

    points: np.ndarray  # (Q, 3) float64
    labels: np.ndarray  # (Q,) uint8, 1 = inside
    near_count: int  # points[:near_count] are near-surface, the rest uniform


def sample_occupancy(
    vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator
) -> OccupancySamples:
    """1/4 near-surface (surface + Gaussian noise at two scales, half each), 3/4 uniform in the box."""
    near = int(round(count * NEAR_SURFACE_FRACTION))
    surface, _ = sample_surface(vertices, faces, near, rng)
    sigma = np.where(np.arange(near) < near // 2, *NEAR_SURFACE_SIGMAS)[:, None]
    near_points = surface + rng.standard_normal((near, 3)) * sigma
    uniform = rng.uniform(-DECODE_BOX, DECODE_BOX, size=(count - near, 3))
    points = np.concatenate([near_points, uniform])
    return OccupancySamples(points, inside_labels(vertices, faces, points), near)
