"""The latent cache on disk: every prepared view's rotated shape encoded once, for MAR training.

MAR training needs, per (object, view), the LR (256-token) and HR (1024-token) latents of the object
rotated into that view's frame. Running the frozen VAE encoder every step costs more than the MAR step on
a CPU, so ``mar3d cache-latents`` (``mar3d.training.cache_latents``) encodes each view once (as the MAR
authors do for images) into this layout:

    CACHE/cache.json              the VAE it came from (config, trained steps), token counts, latent std
    CACHE/<id>.safetensors        ``tokens_<N>``: (V, N, C) posterior means, one row per rendered view

This module reads and writes those files and needs no model. Files are written atomically; a re-run skips
finished objects.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mar3d.utils import atomic

CACHE_JSON = "cache.json"
SUFFIX = ".safetensors"


def tokens_key(tokens: int) -> str:
    return f"tokens_{tokens}"


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

