"""VAE reconstruction: surface samples -> latents (to inspect a trained VAE; decoding: ``mar3d.mesh.latents``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh

from mar3d.data import layout
from mar3d.data.datasets import draw_pyramid, stack_pyramids
from mar3d.data.mesh_io import load_mesh
from mar3d.data.normalize import normalization
from mar3d.data.prepare import item_rng
from mar3d.data.sampling import sample_surface
from mar3d.utils.precision import autocast_for
from mar3d.models.vae import PyramidVAE


@dataclass
class ShapeSamples:
    """What the encoder needs of one shape, in the normalized frame."""

    id: str
    surface_points: np.ndarray  # (P, 3)
    surface_normals: np.ndarray  # (P, 3)
    center: np.ndarray  # (3,) source-frame centre
    scale: float
    occupancy: tuple[np.ndarray, np.ndarray] | None = None  # stored (points, labels) of a prepared item


def samples_from_mesh(path: str | Path, count: int = 200_000, seed: int = 0) -> ShapeSamples:
    """Normalize a mesh file and sample its surface (as ``prepare`` does, without writing anything)."""
    mesh = load_mesh(path)
    center, scale = normalization(mesh.geometry.vertices)
    points, normals = sample_surface((mesh.geometry.vertices - center) * scale, mesh.geometry.faces, count,
                                     item_rng(seed, Path(path).stem))
    return ShapeSamples(Path(path).stem, points, normals, center, scale)


def samples_from_prepared(root: str | Path, item_id: str) -> ShapeSamples:
    s, meta = layout.read_samples(root, item_id), layout.read_meta(root, item_id)
    return ShapeSamples(item_id, s["surface_points"], s["surface_normals"], np.asarray(meta["center"]),
                        meta["scale"], (s["occ_points"], s["occ_labels"]))


@torch.no_grad()
def encode_shapes(vae: PyramidVAE, shapes: list[ShapeSamples], tokens: int, seed: int = 0,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Posterior-mean latents (B, tokens, C) of the shapes (a seeded surface pyramid each)."""
    device = next(vae.parameters()).device
    # The trained counts share one nested draw (as in training); FPS queries also encode any other count.
    config = vae.config
    sizes = config.pyramid_sizes() if tokens in config.token_counts else config.level_sizes(tokens)
    pyramids = [draw_pyramid(s.surface_points, s.surface_normals, sizes, item_rng(seed, s.id)) for s in shapes]
    pyramid = [level.to(device) for level in stack_pyramids(pyramids)]
    with autocast_for(device, dtype):
        return vae.encode(pyramid, tokens).mean.float()


def to_source_frame(mesh: trimesh.Trimesh, shape: ShapeSamples) -> trimesh.Trimesh:
    """Undo the normalization: the mesh in the input file's coordinates."""
    moved = mesh.copy()
    moved.vertices = moved.vertices / shape.scale + shape.center
    return moved
