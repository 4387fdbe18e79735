"""Distances between surfaces (docs/protocol.md §2.4): samples on one mesh, exact distance to the other's triangles."""
from __future__ import annotations

import igl
import numpy as np
import trimesh


def point_to_surface(points: np.ndarray, mesh: trimesh.Trimesh) -> np.ndarray:
    """(N,) unsigned distance of each point (N, 3) to the nearest point on the mesh's triangles."""
    squared, _, _ = igl.point_mesh_squared_distance(np.asarray(points, dtype=np.float64),
                                                    np.asarray(mesh.vertices, dtype=np.float64),
                                                    np.asarray(mesh.faces, dtype=np.int64))
    return np.sqrt(squared)


def surface_distances(a: trimesh.Trimesh, b: trimesh.Trimesh, count: int = 100_000,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Distances of ``count`` seeded area-uniform samples of a to b's surface, and of b's samples to a's."""
    pa = trimesh.sample.sample_surface(a, count, seed=seed)[0]
    pb = trimesh.sample.sample_surface(b, count, seed=seed + 1)[0]
    return point_to_surface(pa, b), point_to_surface(pb, a)


def chamfer_distance(a: trimesh.Trimesh, b: trimesh.Trimesh, count: int = 100_000, seed: int = 0) -> float:
    """CD with exact point-to-triangle distances (the mean of the two directions' means, unsquared).

    No sampling floor on the target side, which suits geometry checks; the protocol's numbers (distances
    between two point samples) come from ``mar3d.evaluation.metrics``.
    """
    ab, ba = surface_distances(a, b, count, seed)
    return 0.5 * (float(ab.mean()) + float(ba.mean()))
