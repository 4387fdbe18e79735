"""Latent caching (``mar3d cache-latents``): a frozen VAE encodes every prepared view once.

One surface pyramid is drawn per object (seeded by the id), rotated by each view's R and encoded; the
posterior *mean* is stored (the KL-regularised variance is tiny, see docs/vae.md, and a mean is what the
pipeline decodes). The files' layout: ``mar3d.data.latent_cache``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from mar3d.data import layout
from mar3d.data.datasets import draw_pyramid, rotate_pyramid, stack_pyramids
from mar3d.data.latent_cache import tokens_key
from mar3d.data.prepare import item_rng
from mar3d.models.vae import PyramidVAE, legacy_name
from mar3d.utils.precision import autocast_dtype, autocast_for


def vae_fingerprint(vae: PyramidVAE) -> str:
    """A short hash of the VAE's weights and token order: a cache made with others must not be mixed in.

    Hashed under the names of the older parameter layout (``legacy_name``), so caches made before the
    per-level cross-attention became one module per level still match their VAE.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(((legacy_name(n), t) for n, t in vae.state_dict().items()), key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    if vae.config.token_order != "fps":  # the same weights in another token order make other latents
        digest.update(f"token_order={vae.config.token_order}".encode())
    return digest.hexdigest()[:16]


@torch.no_grad()
def encode_item_views(vae: PyramidVAE, root: str | Path, item_id: str, token_counts: list[int],
                      seed: int = 0, batch_size: int = 8, views: int = 0) -> dict[str, torch.Tensor]:
    """``tokens_<N>`` -> (V, N, C) float32 posterior means of the item rotated into each of its V views
    (the first ``views`` of them when that is > 0, in the prepared order)."""
    samples = layout.read_samples(root, item_id)
    chosen = layout.read_views(root, item_id)[:views or None]
    pyramid = draw_pyramid(samples["surface_points"], samples["surface_normals"], vae.config.pyramid_sizes(),
                           item_rng(seed, item_id))
    rotated = [rotate_pyramid(v["rotation"], pyramid) for v in chosen]
    device = next(vae.parameters()).device
    out: dict[str, list[torch.Tensor]] = {tokens_key(n): [] for n in token_counts}
    for start in range(0, len(rotated), batch_size):
        chunk = rotated[start:start + batch_size]
        levels = [level.to(device) for level in stack_pyramids(chunk)]
        with autocast_for(device, autocast_dtype("auto", device)):
            for n in token_counts:
                out[tokens_key(n)].append(vae.encode(levels, n).mean.float().cpu())
    return {key: torch.cat(parts) for key, parts in out.items()}
