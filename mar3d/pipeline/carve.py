"""Carving by the input's outline: no part of the object lies where its image shows background.

A generated mesh lies in the view-aligned frame of its framed input, which the one training camera sees
(``mar3d.data.cameras``). A point that this camera projects onto the image's background cannot be on the
object: from one view, everything the image allows lies in the cone of rays through its foreground (the
single-view visual hull). Clipping the decoded occupancy to that cone removes whatever a sample puts outside
the outline and cuts the surface along it, with nothing but the input; it cannot add what a sample lacks
(docs/results.md, "Session 14": F@0.1 +0.05 on the held-out objects, precision and recall both up).

It is done on the field, before marching cubes, so that the cut is a closed surface: at a point x,

    logits(x) -> min(logits(x), SLOPE * (d(x) + MARGIN))

where d(x) is the signed distance, in pixels of an ``OUTLINE_SIZE`` mask, from x's projection to the outline
(positive inside). Deeper inside the outline than a few pixels the field is untouched; outside it is negative.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from mar3d.data.cameras import camera_to_world, intrinsics, project
from mar3d.pipeline.silhouette import OutlineFit, foreground_mask, place_outline

OUTLINE_SIZE = 256  # pixels per side of the outline: 0.005-0.010 normalized units at the object
SLOPE = 2.0  # logits per pixel outside the outline: steep next to the decoder's own slope, so the cut is sharp
MARGIN = 1.0  # pixels of slack outside the outline (the splat and the alpha edge differ by about one)

FieldCarver = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (points (B, Q, 3), logits (B, Q)) -> logits


def outline_distance(mask: np.ndarray) -> np.ndarray:
    """(size, size) float32: each pixel's signed distance in pixels to the outline of a bool mask (positive on
    the object, negative on the background)."""
    return (ndimage.distance_transform_edt(mask) - ndimage.distance_transform_edt(~mask)).astype(np.float32)


def outline_carver(framed: Image.Image, fit: OutlineFit | None = None, size: int = OUTLINE_SIZE
                   ) -> FieldCarver | None:
    """The carving of a framed RGBA input (``ConditionImage.preview``) as a field constraint for
    ``latents_to_meshes(carve=...)``: by its outline as framed, or placed over the mesh's silhouette by ``fit``
    (``silhouette.fit_outline``: the shape is carved, not the size); None when the image shows no object."""
    mask = foreground_mask(framed, size)
    if fit is not None:
        mask = place_outline(mask, fit)
    if not mask.any():
        return None
    K, cam_to_world = intrinsics(size), camera_to_world()
    table = torch.from_numpy(outline_distance(mask) + MARGIN)[None, None]  # (1, 1, size, size)

    def carve(points: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        pixels = project(points.float(), K, cam_to_world)  # (B, Q, 2) x right, y down
        grid = (pixels / size * 2 - 1)[:, :, None, :]  # pixel centres at +0.5, as align_corners=False samples
        # "border": past the image's edge the edge's (background) distance continues, negative.
        inside = torch.nn.functional.grid_sample(table.to(points.device).expand(len(points), -1, -1, -1), grid,
                                                 mode="bilinear", padding_mode="border", align_corners=False)
        return torch.minimum(logits, SLOPE * inside[:, 0, :, 0])

    return carve


def chain(first: FieldCarver, then: FieldCarver) -> FieldCarver:
    """One field constraint that applies ``first``, then ``then``."""
    return lambda points, logits: then(points, first(points, logits))
