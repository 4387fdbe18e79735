"""Marching cubes on a decoded logit grid, with exact vertex placement and outward-facing triangles."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import trimesh
from skimage.measure import marching_cubes

from mar3d.data.normalize import DECODE_BOX

GridStatus = Literal["ok", "empty", "full", "nonfinite"]


def grid_status(values: torch.Tensor | np.ndarray) -> GridStatus:
    """Whether the grid holds a surface: "empty" (all outside), "full" (all inside), "nonfinite" or "ok"."""
    values = torch.as_tensor(values)
    if not torch.isfinite(values).all():
        return "nonfinite"
    inside = values > 0
    if not inside.any():
        return "empty"
    if inside.all():
        return "full"
    return "ok"


def empty_mesh() -> trimesh.Trimesh:
    return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), process=False)


def grid_to_mesh(values: torch.Tensor | np.ndarray, box: float = DECODE_BOX) -> tuple[trimesh.Trimesh, GridStatus]:
    """The 0-level surface of a logit grid (positive inside), Lewiner marching cubes.

    Args:
        values: (R+1, R+1, R+1) logits at corners ``-box + 2 box i / R`` along x, y, z.
    Returns:
        the mesh in box coordinates with outward normals (empty unless the status is "ok"), and the status.
    """
    status = grid_status(values)
    if status != "ok":
        return empty_mesh(), status
    volume = torch.as_tensor(values).detach().to("cpu", torch.float32).numpy()
    resolution = volume.shape[0] - 1
    # skimage's default "descent" winds triangles outward for fields that grow outward (SDFs);
    # logits grow inward, so ask for "ascent".
    vertices, faces, _, _ = marching_cubes(volume, level=0.0, method="lewiner", gradient_direction="ascent")
    # Vertices come in index units: index i is at -box + 2 box i / R (not / (R+1), the release's bias).
    vertices = vertices.astype(np.float64) * (2 * box / resolution) - box
    return trimesh.Trimesh(vertices, faces.astype(np.int64), process=False), status
