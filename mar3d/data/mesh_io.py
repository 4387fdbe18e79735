"""Loading arbitrary mesh files into one validated, renderable object.

Every failure is a :class:`MeshError` whose message a person understands ("contains no triangle
faces", "vertex coordinates contain NaN"), so a batch job can record it and move on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

MESH_SUFFIXES = (".obj", ".glb", ".gltf", ".ply", ".stl", ".off")
DEFAULT_MAX_FACES = 5_000_000
DEFAULT_MAX_FILE_BYTES = 2 * 1024**3


class MeshError(ValueError):
    """An input that cannot be used as a mesh; the message says why."""


@dataclass
class LoadedMesh:
    """A mesh file as geometry (for sampling) and as coloured parts (for rendering).

    ``geometry`` holds every part merged into one triangle mesh in the file's coordinates, with
    duplicate vertices (UV seams, split normals) merged so that watertight scans stay watertight.
    ``parts`` keeps each part's own texture, vertex colours or material, in the same coordinates.
    """

    geometry: trimesh.Trimesh
    parts: list[trimesh.Trimesh]

    @property
    def has_colour(self) -> bool:
        return any(p.visual is not None and p.visual.kind is not None for p in self.parts)


def is_mesh_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in MESH_SUFFIXES


def _triangle_parts(loaded) -> list[trimesh.Trimesh]:
    if isinstance(loaded, trimesh.Trimesh):
        meshes = [loaded]
    elif isinstance(loaded, trimesh.Scene):
        # dump() applies each node's transform, so parts share the file's world coordinates.
        meshes = [g for g in loaded.dump(concatenate=False) if isinstance(g, trimesh.Trimesh)]
    else:
        meshes = []
    return [m for m in meshes if len(m.faces) > 0]


def load_mesh(
    path: str | os.PathLike,
    max_faces: int = DEFAULT_MAX_FACES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> LoadedMesh:
    """Load and validate a mesh file (obj, glb/gltf, ply, stl, off; scenes are merged).

    Raises:
        MeshError: unreadable, empty, non-mesh, NaN/inf, zero-area or too-large input.
    """
    path = Path(path)
    if not path.is_file():
        raise MeshError("file does not exist")
    size = path.stat().st_size
    if size == 0:
        raise MeshError("file is empty (0 bytes)")
    if size > max_file_bytes:
        raise MeshError(f"file is {size / 1024**3:.1f} GB, larger than the {max_file_bytes / 1024**3:.1f} GB limit")
    if not is_mesh_file(path):
        raise MeshError(f"unsupported file type '{path.suffix}' (expected one of {', '.join(MESH_SUFFIXES)})")
    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception as e:  # trimesh raises many types for malformed files
        message = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise MeshError(f"cannot read as a {path.suffix[1:].upper()} mesh: {message}") from None

    parts = _triangle_parts(loaded)
    if not parts:
        raise MeshError("contains no triangle faces (not a surface mesh, or the file is malformed)")
    n_faces = sum(len(p.faces) for p in parts)
    if n_faces > max_faces:
        raise MeshError(f"has {n_faces:,} faces, more than the limit of {max_faces:,} (--max-faces)")

    vertices, faces, offset = [], [], 0
    for p in parts:
        v = np.asarray(p.vertices, dtype=np.float64)
        f = np.asarray(p.faces, dtype=np.int64)
        if not np.isfinite(v).all():
            raise MeshError("vertex coordinates contain NaN or infinity")
        if f.min() < 0 or f.max() >= len(v):
            raise MeshError("faces reference vertices that do not exist")
        vertices.append(v)
        faces.append(f + offset)
        offset += len(v)
    geometry = trimesh.Trimesh(np.concatenate(vertices), np.concatenate(faces), process=False)
    geometry.merge_vertices()
    geometry.update_faces(geometry.nondegenerate_faces(height=None))
    if len(geometry.faces) == 0 or not geometry.area > 0:
        raise MeshError("surface area is zero (all faces are degenerate)")
    radius = np.linalg.norm(geometry.vertices - geometry.bounds.mean(axis=0), axis=1).max()
    if not np.isfinite(radius) or radius <= 0 or radius > 1e15:
        raise MeshError(f"coordinates are out of range (bounding radius {radius:.3g})")
    # Consistent, outward winding per connected body, so face normals point out of the solid.
    trimesh.repair.fix_normals(geometry, multibody=True)
    return LoadedMesh(geometry=geometry, parts=parts)
