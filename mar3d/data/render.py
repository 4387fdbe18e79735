"""Headless RGBA rendering of a mesh under the conditioning-view cameras (pyrender over OSMesa or EGL).

Lighting is fixed and documented: ambient 0.25 plus a white directional key light from the camera
(intensity 1.2) and a fill light from above (intensity 0.6), both in the view frame, so every view of
every mesh is lit the same way relative to the camera. Untextured parts get a plain matte material.
"""
from __future__ import annotations

import os

# OSMesa renders with no GPU and no display; set PYOPENGL_PLATFORM=egl to use a GPU instead.
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import numpy as np  # noqa: E402
import pyrender  # noqa: E402
import trimesh  # noqa: E402

from mar3d.data.cameras import FOV_DEG, camera_to_world  # noqa: E402

AMBIENT = 0.25
KEY_LIGHT = 1.2
FILL_LIGHT = 0.6
PLAIN_GREY = (0.6, 0.6, 0.6)

def _plain_material(colour) -> pyrender.MetallicRoughnessMaterial:
    return pyrender.MetallicRoughnessMaterial(
        baseColorFactor=(*colour, 1.0), metallicFactor=0.0, roughnessFactor=0.9
    )


def _light_pose(direction: np.ndarray) -> np.ndarray:
    """Pose of a directional light shining along ``-direction`` (pyrender lights shine down -z)."""
    z = direction / np.linalg.norm(direction)
    x = np.cross([0.0, 1.0, 0.0] if abs(z[1]) < 0.9 else [1.0, 0.0, 0.0], z)
    x /= np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    return pose


class ViewRenderer:
    """Renders one mesh (its coloured parts) rotated into each view frame. Use as a context manager.

    It owns its GL context: pyrender's OSMesa path holds a few MB per render until the context is
    deleted, so a context shared across meshes grows by ~200 MB per mesh; a new one costs ~6 ms.

    Args:
        parts: meshes in the file's coordinates, with their own visuals.
        normalize: (4, 4) transform to the normalized frame.
        resolution: square image size in pixels.
        plain_colour: RGB in [0, 1] for parts without texture or vertex colours.
    """

    def __init__(self, parts: list[trimesh.Trimesh], normalize: np.ndarray, resolution: int,
                 plain_colour=PLAIN_GREY, antialias: bool = False):
        self.resolution = resolution
        self.antialias = antialias
        self.normalize = normalize
        self.scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=[AMBIENT] * 3)
        self.nodes = []
        for part in parts:
            material = None if part.visual is not None and part.visual.kind is not None else _plain_material(plain_colour)
            mesh = pyrender.Mesh.from_trimesh(part, material=material)
            for primitive in mesh.primitives:
                # Open surfaces (scans with holes, sheets) must not turn invisible from behind.
                primitive.material.doubleSided = True
            self.nodes.append(self.scene.add(mesh, pose=normalize))
        camera = pyrender.PerspectiveCamera(yfov=np.deg2rad(FOV_DEG), aspectRatio=1.0, znear=0.05, zfar=20.0)
        self.scene.add(camera, pose=camera_to_world())
        self.scene.add(pyrender.DirectionalLight(intensity=KEY_LIGHT), pose=_light_pose(np.array([0.0, 0.0, 1.0])))
        self.scene.add(pyrender.DirectionalLight(intensity=FILL_LIGHT), pose=_light_pose(np.array([-0.3, 1.0, 0.3])))
        self.renderer = pyrender.OffscreenRenderer(resolution, resolution)
        if antialias:
            # pyrender assumes OSMesa has no framebuffer objects and reads the aliased default buffer (RGB
            # only). Mesa's llvmpipe does support them: pyrender's 4x MSAA framebuffer gives antialiased
            # colour and a coverage alpha. It costs ~4x the render time on a CPU, and training images are
            # downsampled (512 -> 224) anyway, so it is opt-in.
            self.renderer._platform.supports_framebuffers = lambda: True

    def __enter__(self) -> "ViewRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.delete()
            self.renderer = None

    def render(self, rotation: np.ndarray) -> np.ndarray:
        """(H, W, 4) uint8 RGBA image of the mesh rotated by ``rotation`` (3, 3).

        Alpha is 255 where a pixel centre sees the mesh, or the pixel's coverage with ``antialias``.
        """
        pose = np.eye(4)
        pose[:3, :3] = rotation
        pose = pose @ self.normalize
        for node in self.nodes:
            self.scene.set_pose(node, pose)
        colour, depth = self.renderer.render(self.scene, flags=pyrender.RenderFlags.RGBA)
        if not self.antialias:  # OSMesa's default buffer has no alpha: coverage is where depth was written
            rgba = np.empty(colour.shape[:2] + (4,), dtype=np.uint8)
            rgba[..., :3] = colour[..., :3]  # the background is cleared to black already
            np.multiply(depth > 0, 255, out=rgba[..., 3], casting="unsafe")
            return rgba
        rgba = np.array(colour)
        # The resolve averages the object's colour with the black clear colour (premultiplied);
        # PNG stores straight alpha, so divide the coverage back out of edge pixels.
        alpha = rgba[..., 3:].astype(np.float32)
        edge = (alpha[..., 0] > 0) & (alpha[..., 0] < 255)
        rgba[edge, :3] = np.clip(rgba[edge, :3] * (255.0 / alpha[edge]), 0, 255).round().astype(np.uint8)
        return rgba
