"""Choosing among sampled candidates by their silhouettes: does a mesh cover what the input image shows?

A generated mesh lies in the view-aligned frame of its framed input image, and that frame has one fixed
camera (``mar3d.data.cameras``: the camera every training view was rendered with). Projecting the mesh through
that camera gives the outline the input image should have; its intersection-over-union with the image's
foreground measures how well the sample follows the image in outline, size and aspect, with nothing but the
input. Sampling several MAR-LR token sets and keeping the best-matching one is a cheap, training-free gain for a
weak model (docs/results.md, "Candidate selection": the same F@0.1 gain as several times the training).

The silhouette is a splat of dense surface samples on a small pixel grid, not a rasterization: at
``MASK_SIZE`` pixels a pixel spans 0.011-0.020 normalized units at the object (near to far side), and
``SILHOUETTE_POINTS`` samples are about 0.01 apart on a mesh of surface area 10 (a normalized mesh fills a sphere
of radius 0.95, area 11), so the splat has few holes, and it needs neither GL nor a ray caster.
"""
from __future__ import annotations

import numpy as np
import trimesh
from PIL import Image

from mar3d.data.cameras import camera_to_world, intrinsics, project
from mar3d.pipeline.images import FOREGROUND_ALPHA

MASK_SIZE = 128  # pixels per side of the compared masks
SILHOUETTE_POINTS = 100_000  # surface samples splatted per mesh
SELECTION_RESOLUTION = 32  # marching-cubes grid the candidates are decoded on for comparison: an outline needs no detail


def foreground_mask(framed: Image.Image, size: int = MASK_SIZE) -> np.ndarray:
    """(size, size) bool: where the framed RGBA input (``ConditionImage.preview``) shows the object."""
    alpha = framed.getchannel("A").resize((size, size), Image.Resampling.BOX)
    return np.asarray(alpha) >= FOREGROUND_ALPHA


def silhouette(mesh: trimesh.Trimesh, size: int = MASK_SIZE, points: int = SILHOUETTE_POINTS) -> np.ndarray:
    """(size, size) bool: the pixels the mesh covers, seen by the training camera (all False without faces).

    Deterministic: the surface samples are drawn with a fixed seed.
    """
    mask = np.zeros((size, size), dtype=bool)
    if len(mesh.faces) == 0:
        return mask
    samples, _ = trimesh.sample.sample_surface(mesh, points, seed=0)
    pixels = np.floor(project(np.asarray(samples), intrinsics(size), camera_to_world())).astype(int)  # (P, 2) x, y
    inside = np.all((pixels >= 0) & (pixels < size), axis=1)
    mask[pixels[inside, 1], pixels[inside, 0]] = True
    return mask


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks of one shape (0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


def silhouette_scores(meshes: list[trimesh.Trimesh], framed: Image.Image) -> list[float]:
    """Each mesh's silhouette IoU with the framed input's foreground (a mesh with no faces scores 0)."""
    target = foreground_mask(framed)
    return [mask_iou(silhouette(mesh), target) for mesh in meshes]
