"""Normal-map previews of a generated mesh: four views around it, side by side, in one image.

The renders are ``mar3d.data.render_normals`` (pyrender over OSMesa; RGB = (n + 1) / 2 in the camera
frame: x right, y up, z towards the viewer; the mesh framed to fit the camera). The first view is the input
image's (the mesh is view-aligned); the others turn the mesh by 90°, 180° and 270° about the vertical.
"""
from __future__ import annotations

import numpy as np
import trimesh
from PIL import Image

PREVIEW_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)
BACKGROUND = (255, 255, 255)


def turn(azimuth_deg: float) -> np.ndarray:
    """(3, 3) rotation about +y (image-up) by the azimuth."""
    a = np.deg2rad(azimuth_deg)
    return np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])


def render_normal_views(mesh: trimesh.Trimesh, size: int = 256, azimuths=PREVIEW_AZIMUTHS) -> Image.Image:
    """RGB image, ``size * len(azimuths)`` wide and ``size`` high, on white: the mesh's normal maps."""
    canvas = Image.new("RGB", (size * len(azimuths), size), BACKGROUND)
    if len(mesh.faces) == 0:
        return canvas
    from mar3d.data.render_normals import render_normal_maps  # pyrender: only when rendering

    (views,) = render_normal_maps([mesh], [turn(a) for a in azimuths], size)
    for k, rgba in enumerate(views):
        view = Image.fromarray(rgba, "RGBA")
        canvas.paste(view.convert("RGB"), (k * size, 0), view)
    return canvas
