"""Choosing among sampled candidates by their silhouettes: does a mesh cover what the input image shows?

A generated mesh lies in the view-aligned frame of its framed input image, and that frame has one fixed
camera (``mar3d.data.cameras``: the camera every training view was rendered with). Projecting the mesh through
that camera gives the outline the input image should have. The image's foreground, laid over that outline at the
best centroid shift and scale (``fit_outline``: the framing fixes the outline's size only roughly, and the
evaluation normalizes size away), has an intersection-over-union with it that measures how well the sample follows
the image in outline and aspect, with nothing but the input. Sampling several MAR-LR token sets and keeping the
best-matching one is a cheap, training-free gain for a weak model (docs/results.md, "Candidate selection": the
same F@0.1 gain as several times the training); the same placement tells ``mar3d.pipeline.carve`` where to cut.

The silhouette is a splat of dense surface samples on a small pixel grid, not a rasterization: at
``MASK_SIZE`` pixels a pixel spans 0.011-0.020 normalized units at the object (near to far side), and
``SILHOUETTE_POINTS`` samples are about 0.01 apart on a mesh of surface area 10 (a normalized mesh fills a sphere
of radius 0.95, area 11), so the splat has few holes, and it needs neither GL nor a ray caster.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import trimesh
from PIL import Image
from scipy import ndimage

from mar3d.data.cameras import camera_to_world, intrinsics, project_with_depth
from mar3d.pipeline.images import FOREGROUND_ALPHA

MASK_SIZE = 128  # pixels per side of the compared masks
SILHOUETTE_POINTS = 100_000  # surface samples splatted per mesh
SELECTION_RESOLUTION = 32  # marching-cubes grid the candidates are decoded on for comparison: an outline needs no detail
# Scales tried around the area ratio when the input's outline is laid over a silhouette (``fit_outline``).
FIT_SCALES = np.exp(np.linspace(-0.3, 0.3, 13))


def foreground_mask(framed: Image.Image, size: int = MASK_SIZE) -> np.ndarray:
    """(size, size) bool: where the framed RGBA input (``ConditionImage.preview``) shows the object."""
    alpha = framed.getchannel("A").resize((size, size), Image.Resampling.BOX)
    return np.asarray(alpha) >= FOREGROUND_ALPHA


def splat(mesh: trimesh.Trimesh, size: int = MASK_SIZE, points: int = SILHOUETTE_POINTS
          ) -> tuple[np.ndarray, np.ndarray]:
    """Surface samples of a mesh with faces, seen by the training camera: (P, 2) int pixels (x, y) of those that
    land in the (size, size) image, and their (P,) depths. Deterministic: the samples are drawn with a fixed seed."""
    samples, _ = trimesh.sample.sample_surface(mesh, points, seed=0)
    pixels, depths = project_with_depth(np.asarray(samples), intrinsics(size), camera_to_world())
    pixels = np.floor(pixels).astype(int)
    inside = np.all((pixels >= 0) & (pixels < size), axis=1)
    return pixels[inside], depths[inside]


def silhouette(mesh: trimesh.Trimesh, size: int = MASK_SIZE, points: int = SILHOUETTE_POINTS) -> np.ndarray:
    """(size, size) bool: the pixels the mesh covers, seen by the training camera (all False without faces).

    Deterministic: the surface samples are drawn with a fixed seed.
    """
    mask = np.zeros((size, size), dtype=bool)
    if len(mesh.faces) == 0:
        return mask
    pixels, _ = splat(mesh, size, points)
    mask[pixels[:, 1], pixels[:, 0]] = True
    return mask


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks of one shape (0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


@dataclass(frozen=True)
class OutlineFit:
    """Where the input's outline lies over a mesh's silhouette: scaled by ``scale`` about its centroid and moved
    onto the silhouette's centroid (centroids as (row, column) fractions of the image side), with the IoU there.

    Why a fit and not the outline as it is: the framing of an input only approximates a training render's (its
    longest side is scaled to a median fill, ``images.FRAMING_FILL``, whereas a render's fill depends on the
    object's shape), so a mesh of the right shape can be a little larger or smaller than the framed outline.
    """

    iou: float
    scale: float
    target_centre: np.ndarray  # (2,)
    silhouette_centre: np.ndarray  # (2,)


def mask_centre(mask: np.ndarray) -> np.ndarray:
    """(row, column) centroid of a non-empty bool mask, as fractions of its side."""
    rows, columns = np.nonzero(mask)
    return (np.array([rows.mean(), columns.mean()]) + 0.5) / mask.shape[0]


def place_outline(target: np.ndarray, fit: OutlineFit) -> np.ndarray:
    """The bool mask ``target`` (any square size) moved and scaled by ``fit`` onto the silhouette."""
    n, s = target.shape[0], fit.scale
    # affine_transform maps each output pixel q to the input pixel q / s + offset (pixel centres at +0.5).
    offset = n * fit.target_centre + 0.5 / s - n * fit.silhouette_centre / s - 0.5
    return ndimage.affine_transform(target.astype(np.float32), np.full(2, 1 / s), offset=offset, order=1) >= 0.5


def fit_outline(outline: np.ndarray, target: np.ndarray) -> OutlineFit:
    """The placement of the bool mask ``target`` over the silhouette ``outline`` (same size) with the highest IoU:
    centroids matched, scales ``FIT_SCALES`` around the square root of the area ratio. IoU 0 and scale 1 where
    either mask is empty."""
    if not outline.any() or not target.any():
        return OutlineFit(0.0, 1.0, np.full(2, 0.5), np.full(2, 0.5))
    centres = mask_centre(target), mask_centre(outline)
    area_scale = float(np.sqrt(np.count_nonzero(outline) / np.count_nonzero(target)))
    placements = [OutlineFit(0.0, area_scale * float(k), *centres) for k in FIT_SCALES]
    scored = [replace(f, iou=mask_iou(outline, place_outline(target, f))) for f in placements]
    return max(scored, key=lambda f: f.iou)  # the first of equals
