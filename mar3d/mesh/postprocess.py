"""Cleaning an extracted mesh: degenerate faces, floaters, decimation to a face budget, watertightness."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import trimesh
from scipy.sparse.csgraph import connected_components


@dataclass(frozen=True)
class PostprocessOptions:
    """What :func:`postprocess` does; the defaults suit a decoded shape."""

    remove_degenerate: bool = True  # merge coincident vertices, drop zero-area and duplicate faces
    min_component_fraction: float = 0.02  # drop parts smaller than this fraction of the largest's area; 0 keeps all
    max_faces: int | None = None  # decimate (fast-simplification) to at most this many faces; None keeps all


@dataclass
class PostprocessReport:
    """What :func:`postprocess` found and did."""

    faces_in: int
    faces_out: int
    components_in: int
    components_removed: int
    watertight: bool


def face_components(mesh: trimesh.Trimesh) -> tuple[int, np.ndarray]:
    """Connected components over shared vertices: count and (F,) label of each face."""
    if len(mesh.faces) == 0:
        return 0, np.zeros(0, dtype=np.int64)
    f = mesh.faces
    rows = np.concatenate([f[:, 0], f[:, 1]])
    cols = np.concatenate([f[:, 1], f[:, 2]])
    n = len(mesh.vertices)
    graph = scipy.sparse.coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, vertex_label = connected_components(graph, directed=False)
    # Only components with faces count; isolated vertices get labels too, so renumber.
    used, face_label = np.unique(vertex_label[f[:, 0]], return_inverse=True)
    return len(used), face_label


def remove_degenerate(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    mesh = mesh.copy()
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces() & mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    return mesh


def remove_small_components(mesh: trimesh.Trimesh, min_fraction: float) -> tuple[trimesh.Trimesh, int, int]:
    """Keep components with at least ``min_fraction`` of the largest one's area.

    Returns:
        the mesh, the number of components before, and the number removed.
    """
    count, label = face_components(mesh)
    if count <= 1 or min_fraction <= 0:
        return mesh, count, 0
    area = np.bincount(label, weights=mesh.area_faces, minlength=count)
    keep = area >= min_fraction * area.max()
    mesh = mesh.copy()
    mesh.update_faces(keep[label])
    mesh.remove_unreferenced_vertices()
    return mesh, count, int((~keep).sum())


def decimate(mesh: trimesh.Trimesh, max_faces: int) -> trimesh.Trimesh:
    """Quadric decimation to at most ``max_faces`` faces (fast-simplification)."""
    if len(mesh.faces) <= max_faces:
        return mesh
    import fast_simplification  # only needed when a face budget is set

    vertices, faces = fast_simplification.simplify(
        np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64), target_count=max_faces)
    return trimesh.Trimesh(vertices, faces, process=False)


def postprocess(mesh: trimesh.Trimesh, options: PostprocessOptions) -> tuple[trimesh.Trimesh, PostprocessReport]:
    """Clean, drop floaters, decimate (each as the options say), then check watertightness."""
    faces_in = len(mesh.faces)
    if options.remove_degenerate:
        mesh = remove_degenerate(mesh)
    mesh, components, removed = remove_small_components(mesh, options.min_component_fraction)
    if options.max_faces is not None:
        mesh = decimate(mesh, options.max_faces)
        if options.remove_degenerate:
            mesh = remove_degenerate(mesh)
    watertight = len(mesh.faces) > 0 and bool(mesh.is_watertight)
    return mesh, PostprocessReport(faces_in, len(mesh.faces), components, removed, watertight)
