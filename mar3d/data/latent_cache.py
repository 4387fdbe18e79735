"""Cached VAE latents for MAR training: every prepared view's rotated shape encoded once.

MAR training needs, per (object, view), the LR (256-token) and HR (1024-token) latents of the object
rotated into that view's frame. Running the frozen VAE encoder every step costs more than the MAR step on
a CPU, so ``mar3d cache-latents`` encodes each view once (as the MAR authors do for images):

    CACHE/cache.json              the VAE it came from (config, trained steps), token counts, latent std
    CACHE/<id>.safetensors        ``tokens_<N>``: (V, N, C) posterior means, one row per rendered view

One surface pyramid is drawn per object (seeded by the id), rotated by each view's R and encoded; the
posterior *mean* is stored (the KL-regularised variance is tiny, see docs/vae.md, and a mean is what the
pipeline decodes). Files are written atomically; a re-run skips finished objects.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mar3d.data import layout
from mar3d.data.datasets import rotate_pyramid, draw_pyramid
from mar3d.data.prepare import item_rng
from mar3d.models.vae import PyramidVAE
from mar3d.utils import atomic
from mar3d.utils.precision import autocast_dtype, autocast_for

CACHE_JSON = "cache.json"
SUFFIX = ".safetensors"


def vae_fingerprint(vae: PyramidVAE) -> str:
    """A short hash of the VAE's weights: a cache made with other weights must not be mixed in."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def tokens_key(tokens: int) -> str:
    return f"tokens_{tokens}"


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
        levels = [torch.stack(level).to(device) for level in zip(*chunk)]
        with autocast_for(device, autocast_dtype("auto", device)):
            for n in token_counts:
                out[tokens_key(n)].append(vae.encode(levels, n).mean.float().cpu())
    return {key: torch.cat(parts) for key, parts in out.items()}


def write_item(cache: str | Path, item_id: str, latents: dict[str, torch.Tensor]) -> None:
    path = Path(cache) / f"{item_id}{SUFFIX}"
    with atomic.atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in latents.items()}, str(tmp))


def read_item(cache: str | Path, item_id: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(cache) / f"{item_id}{SUFFIX}"))


def cached_ids(cache: str | Path) -> list[str]:
    return sorted(p.name[:-len(SUFFIX)] for p in Path(cache).glob(f"*{SUFFIX}") if atomic.TMP_MARK not in p.name)


def read_info(cache: str | Path) -> dict:
    path = Path(cache) / CACHE_JSON
    if not path.exists():
        raise FileNotFoundError(f"{cache}: not a latent cache (no {CACHE_JSON}; run `mar3d cache-latents`)")
    return json.loads(path.read_text())


def latent_std(cache: str | Path, tokens: int, ids: list[str] | None = None, limit: int = 200) -> float:
    """Standard deviation of all cached latent values of one token count (over up to ``limit`` objects).

    docs/method.md §5: the MAR's diffusion assumes roughly unit-variance tokens, so latents are divided by this.
    """
    ids = (ids or cached_ids(cache))[:limit]
    values = [read_item(cache, i)[tokens_key(tokens)].flatten() for i in ids]
    if not values:
        raise ValueError(f"{cache}: no cached latents to measure")
    return float(torch.cat(values).std())


def matches_vae(info: dict, fingerprint: str) -> bool:
    return info.get("vae_fingerprint") == fingerprint


def summarize(cache: str | Path, vae_dir: str | Path, fingerprint: str, token_counts: list[int],
              seed: int) -> dict:
    """Write ``cache.json`` with what the cache was made from and the measured latent std per token count."""
    ids = cached_ids(cache)
    info = {"vae": str(vae_dir), "vae_fingerprint": fingerprint, "token_counts": token_counts, "seed": seed,
            "objects": len(ids),
            "latent_std": {str(n): latent_std(cache, n, ids) for n in token_counts} if ids else {}}
    atomic.write_json(Path(cache) / CACHE_JSON, info)
    return info


def views_per_item(latents: dict[str, torch.Tensor]) -> int:
    return int(next(iter(latents.values())).shape[0])

