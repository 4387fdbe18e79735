"""Latent tokens -> occupancy field -> meshes, with the Pyramid VAE's decoder: the inference side of the VAE.

Used by the image -> mesh pipeline, the VAE reconstruction tools and the evaluation of VAE runs.
"""
from __future__ import annotations

from typing import Callable

import torch

from mar3d.mesh.extract import ExtractionResult, extract_meshes
from mar3d.mesh.grid import DEFAULT_RESOLUTION, Mode
from mar3d.mesh.postprocess import PostprocessOptions
from mar3d.models.vae import PyramidVAE
from mar3d.utils.precision import autocast_for


@torch.no_grad()
def latents_to_meshes(vae: PyramidVAE, latents: torch.Tensor, resolution: int = DEFAULT_RESOLUTION,
                      mode: Mode = "hierarchical", postprocess: PostprocessOptions | None = PostprocessOptions(),
                      dtype: torch.dtype = torch.float32,
                      carve: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                      ) -> list[ExtractionResult]:
    """One mesh per latent set (B, N, C), in the normalized frame, with its stage timings.

    ``carve``: (points (B, Q, 3), logits (B, Q)) -> logits, a constraint applied to the decoded field before
    marching cubes (``mar3d.pipeline.carve``: nothing outside the input's outline).
    """
    device = latents.device
    with autocast_for(device, dtype):
        cache = vae.prepare_decoder(latents)

    def logits_fn(points: torch.Tensor) -> torch.Tensor:
        with autocast_for(device, dtype):
            logits = vae.query(cache, points.to(device)).float()
        return logits if carve is None else carve(points, logits)

    return extract_meshes(logits_fn, len(latents), resolution=resolution, mode=mode,
                          postprocess_options=postprocess, device=device)


@torch.no_grad()
def query_latents(vae: PyramidVAE, latents: torch.Tensor, points: torch.Tensor,
                  dtype: torch.dtype = torch.float32, chunk: int = 65536) -> torch.Tensor:
    """Logits (B, Q) of latents (B, N, C) at points (B, Q, 3), decoded in chunks of ``chunk`` points."""
    with autocast_for(latents.device, dtype):
        cache = vae.prepare_decoder(latents)
        return torch.cat([vae.query(cache, c.to(latents.device)).float() for c in points.split(chunk, dim=1)], dim=1)
