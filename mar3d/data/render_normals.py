"""Normal-map renders of meshes: shape without texture or lighting (generation previews, evaluation pictures).

Each pixel shows the unit normal of the visible face in the view frame as colour ((n + 1) / 2: x right is
red, y up is green, towards the camera is blue). Faces are shaded flat and turned to face the camera, so
meshes with inconsistent or flipped orientation render the same as clean ones. The camera is the
conditioning views' camera (``mar3d.data.cameras``): in the view frame on +z, looking down -z.
"""
from __future__ import annotations

import numpy as np
import trimesh

import mar3d.data.render  # noqa: F401  (sets PYOPENGL_PLATFORM: import it before pyrender)
from mar3d.data.cameras import CAMERA_DISTANCE, FOV_DEG, camera_to_world
from mar3d.data.normalize import TARGET_RADIUS

import pyrender  # noqa: E402


def _normal_primitive(vertices: np.ndarray, faces: np.ndarray) -> pyrender.Mesh:
    """Unshared vertices coloured by their face's normal, flipped towards the camera."""
    tri = vertices[faces]  # (F, 3, 3)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-30)
    to_camera = np.array([0.0, 0.0, CAMERA_DISTANCE]) - tri.mean(axis=1)
    normals *= np.where(np.einsum("ij,ij->i", normals, to_camera) < 0, -1.0, 1.0)[:, None]
    colours = np.ones((len(faces), 4))
    colours[:, :3] = (normals + 1) / 2
    material = pyrender.MetallicRoughnessMaterial(baseColorFactor=(1.0, 1.0, 1.0, 1.0), doubleSided=True)
    primitive = pyrender.Primitive(positions=tri.reshape(-1, 3), color_0=np.repeat(colours, 3, axis=0),
                                   material=material)
    return pyrender.Mesh([primitive])


def render_normal_maps(meshes: list[trimesh.Trimesh], rotations: list[np.ndarray],
                       resolution: int = 256) -> list[list[np.ndarray]]:
    """Normal maps of each mesh under each rotation: ``images[mesh][view]`` is (H, W, 4) uint8 RGBA.

    The meshes are framed together (one centre and scale for all, fitting the camera), so renders of a
    prediction and its ground truth in one frame are directly comparable.
    """
    lo = np.min([m.vertices.min(axis=0) for m in meshes], axis=0)
    hi = np.max([m.vertices.max(axis=0) for m in meshes], axis=0)
    center = (lo + hi) / 2
    radius = max(float(np.linalg.norm(m.vertices - center, axis=1).max()) for m in meshes)
    scale = TARGET_RADIUS / max(radius, 1e-30)
    renderer = pyrender.OffscreenRenderer(resolution, resolution)
    try:
        images = []
        for mesh in meshes:
            local = (np.asarray(mesh.vertices, dtype=np.float64) - center) * scale
            row = []
            for rotation in rotations:
                scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=[1.0, 1.0, 1.0])
                scene.add(_normal_primitive(local @ np.asarray(rotation).T, np.asarray(mesh.faces)))
                scene.add(pyrender.PerspectiveCamera(yfov=np.deg2rad(FOV_DEG), aspectRatio=1.0, znear=0.05,
                                                     zfar=20.0), pose=camera_to_world())
                colour, depth = renderer.render(scene, flags=pyrender.RenderFlags.FLAT)
                rgba = np.empty(colour.shape[:2] + (4,), dtype=np.uint8)
                rgba[..., :3] = colour[..., :3]
                rgba[..., 3] = np.where(depth > 0, 255, 0)
                row.append(rgba)
            images.append(row)
        return images
    finally:
        renderer.delete()


def on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 RGBA -> (H, W, 3) uint8 RGB composited on white."""
    alpha = rgba[..., 3:] / 255.0
    return np.round(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)


def normal_map_row(meshes: list[trimesh.Trimesh | None], rotation: np.ndarray,
                   resolution: int = 256) -> list[np.ndarray | None]:
    """One row of a comparison picture: each mesh's normal map on white, (H, W, 3) uint8, framed together;
    None where a mesh is missing or has no faces."""
    present = [m for m in meshes if m is not None and len(m.faces)]
    renders = iter(row[0] for row in render_normal_maps(present, [rotation], resolution)) if present else iter(())
    return [on_white(next(renders)) if m is not None and len(m.faces) else None for m in meshes]
