"""Filling the outline: where the input shows the object and the mesh has nothing, the mesh's nearest depth goes on.

Carving (``carve``) removes what a sample puts outside the input's outline; it cannot add what a sample lacks, and
a weak model's samples often lack parts the image shows: the corners of a box, the end of a spoon's handle, a wing
(docs/results.md, "Session 16": 12-34% of the outline uncovered for the box, the mug, the spoon, the hammer and the
toy airplane). One view says where such a part lies across the image, not how deep; the nearest part the mesh does
have is the best guess: a box's missing corner lies between the same front and back as the box beside it, a handle
goes on at the depth of its end.

From the (coarse) mesh's surface samples splatted through the training camera, each pixel it covers has a front
and a back depth. Each pixel of the placed outline (``silhouette.OutlineFit``) that the mesh leaves uncovered
borrows the front and back of the nearest pixel the mesh covers solidly (one pixel in from its own edge, where the
two depths are a real thickness, not a grazing edge). In the field, a point x that projects into such a pixel gets

    logits(x) -> max(logits(x), SLOPE * min(depth(x) - front, back - depth(x)))

a slab between the borrowed depths; everywhere else the field is untouched. Carving applies after it.
"""
from __future__ import annotations

import numpy as np
import torch
import trimesh
from PIL import Image
from scipy import ndimage

from mar3d.data.cameras import camera_to_world, intrinsics, project_with_depth
from mar3d.pipeline.carve import FieldCarver
from mar3d.pipeline.silhouette import MASK_SIZE, OutlineFit, foreground_mask, place_outline, splat

SLOPE = 200.0  # logits per normalized unit of depth: steep next to the decoder's own slope, so the slab is crisp
CLOSING = 2  # pixels: gaps in the splat narrower than twice this are the mesh's, not uncovered outline
OPENING = 2  # pixels: uncovered parts of the outline narrower than twice this are left alone (see outline_filler)


def depth_range(mesh: trimesh.Trimesh, size: int = MASK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(size, size) float64 front and back depth of the mesh per pixel of the training camera (inf and -inf where
    it covers nothing), from its splatted surface samples (``silhouette.splat``)."""
    front, back = np.full((size, size), np.inf), np.full((size, size), -np.inf)
    if len(mesh.faces) == 0:
        return front, back
    pixels, depths = splat(mesh, size)
    np.minimum.at(front, (pixels[:, 1], pixels[:, 0]), depths)
    np.maximum.at(back, (pixels[:, 1], pixels[:, 0]), depths)
    return front, back


def outline_filler(mesh: trimesh.Trimesh, framed: Image.Image, fit: OutlineFit, size: int = MASK_SIZE
                   ) -> tuple[FieldCarver | None, float]:
    """The filling of a framed RGBA input's outline, placed by ``fit`` over ``mesh``'s silhouette, as a field
    constraint for ``latents_to_meshes(carve=...)`` (None when the mesh covers the whole outline, or nothing), and
    the share of the outline's pixels it fills."""
    front, back = depth_range(mesh, size)
    covered = np.isfinite(front)
    solid = ndimage.binary_erosion(covered)
    if not solid.any():
        solid = covered
    outline = place_outline(foreground_mask(framed, size), fit)
    gaps = outline & ~ndimage.binary_closing(covered, iterations=CLOSING)
    gaps = ndimage.binary_opening(gaps, iterations=OPENING)  # a rim of a pixel or two is the fit's, not a part
    if not solid.any() or not gaps.any():
        return None, 0.0
    _, (rows, columns) = ndimage.distance_transform_edt(~solid, return_indices=True)
    near, far = front[rows, columns], back[rows, columns]  # (size, size): the nearest solid pixel's depths
    near[~gaps], far[~gaps] = np.inf, -np.inf  # no slab outside the gaps
    table = torch.from_numpy(np.stack([near, far]).astype(np.float32))  # (2, size, size)
    K, cam_to_world = intrinsics(size), camera_to_world()

    def fill(points: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        pixels, depth = project_with_depth(points.float(), K, cam_to_world)  # (B, Q, 2) x right, y down; (B, Q)
        column, row = pixels.floor().long().clamp(0, size - 1).unbind(-1)
        near, far = table.to(points.device)[:, row, column]  # (B, Q) each
        slab = SLOPE * torch.minimum(depth - near, far - depth)  # -inf outside the gaps
        return torch.maximum(logits, slab)

    return fill, np.count_nonzero(gaps) / np.count_nonzero(outline)
