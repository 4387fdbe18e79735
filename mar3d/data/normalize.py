"""The project's one normalization (docs/method.md §2): bounding-box centre to the origin, max vertex radius 0.95."""
from __future__ import annotations

import numpy as np

TARGET_RADIUS = 0.95
DECODE_BOX = 1.05  # decoding / uniform-sampling box is [-DECODE_BOX, DECODE_BOX]^3


def normalization(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and scale such that ``(vertices - center) * scale`` fits the unit ball of radius 0.95.

    Args:
        vertices: (V, 3) positions in the file's units.
    Returns:
        center (3,) float64 and scale (float).
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    center = (vertices.min(axis=0) + vertices.max(axis=0)) / 2
    radius = np.linalg.norm(vertices - center, axis=1).max()
    return center, float(TARGET_RADIUS / radius)


def normalization_matrix(center: np.ndarray, scale: float) -> np.ndarray:
    """(4, 4) homogeneous transform that applies ``(v - center) * scale``."""
    m = np.eye(4)
    m[:3, :3] *= scale
    m[:3, 3] = -np.asarray(center) * scale
    return m
