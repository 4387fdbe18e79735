"""A canonical order for the VAE's latent tokens, so that a token's index means roughly the same place on
every object (docs/vae.md, "Token order").

The encoder and decoder are permutation-equivariant in the tokens, so their order is free for the VAE; the
MARs, though, give every token index a learned position embedding and predict each masked token from it.
In farthest-point order index 0 is a random surface point and index i "far from the first i", which means
nothing from one object to the next: every index's distribution is the whole surface. In band order

    tokens sorted by height (+y, image-up in the view frame) into ``bands`` equal-count horizontal bands,
    each band sorted by azimuth around +y (angle 0 towards the camera, +z)

index i sits in height band i // (N / bands), at the (i mod N / bands)-th azimuth: a narrow prior per index.
Equal-count bands (rather than fixed heights) keep every index inside one band whatever the object's shape.
"""
from __future__ import annotations

import math
from typing import Literal, get_args

import torch

TokenOrder = Literal["fps", "bands"]
TOKEN_ORDERS: tuple[str, ...] = get_args(TokenOrder)


def band_count(num_tokens: int) -> int:
    """Bands for N tokens: about twice as many tokens per band as bands (128 -> 8 x 16, 512 -> 16 x 32)."""
    return max(1, round(math.sqrt(num_tokens / 2)))


def band_order(positions: torch.Tensor, bands: int | None = None) -> torch.Tensor:
    """Indices (B, N) that put points (B, N, 3) in band order (module docstring); a permutation per row."""
    n = positions.shape[1]
    bands = band_count(n) if bands is None else bands
    xyz = positions.detach().float()
    height_rank = xyz[..., 1].argsort(dim=-1).argsort(dim=-1)  # (B, N): 0 = lowest
    band = torch.div(height_rank * bands, n, rounding_mode="floor")  # equal counts (within one)
    azimuth = torch.atan2(xyz[..., 0], xyz[..., 2])  # (-pi, pi], 0 towards the camera
    within = (azimuth + math.pi) / (2 * math.pi + 1e-3)  # [0, 1)
    return (band + within).argsort(dim=-1)
