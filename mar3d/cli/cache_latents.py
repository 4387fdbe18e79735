"""`mar3d cache-latents`: encode every prepared view once with a frozen VAE, for fast MAR training."""
from __future__ import annotations

import time
from pathlib import Path

from mar3d.cli.common import HelpFormatter, load_vae_arg
from mar3d.cli.errors import CLIError


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name, help="encode prepared views to VAE latents once (optional; speeds up MAR training)",
        description=(
            "For every prepared object in DATA and each of its rendered views, rotate the object's surface "
            "pyramid into the view's frame and store the VAE's posterior-mean latents for each token count "
            "the VAE was trained for (256 for MAR-LR, 1024 for MAR-HR): OUT/<id>.safetensors. OUT/cache.json "
            "records the VAE and the measured latent standard deviation, which MAR training uses as its "
            "latent scale. A re-run skips finished objects; a cache made by another VAE is refused."),
        formatter_class=HelpFormatter)
    p.add_argument("data", nargs="+", metavar="PREPARED_DIR", help="prepared directories (`mar3d prepare`)")
    p.add_argument("--vae", required=True, metavar="RUN_OR_MODEL_DIR", help="a VAE training run or model folder")
    p.add_argument("--out", required=True, metavar="CACHE_DIR", help="the cache folder (made if missing)")
    p.add_argument("--only", nargs="+", metavar="ID", help="cache only these object ids")
    p.add_argument("--views", type=int, default=0, metavar="K",
                   help="encode only the first K views of each object (0: all); MAR training with "
                        "data.views_per_object <= K reads no others")
    p.add_argument("--batch-size", type=int, default=8, help="views encoded together")
    p.add_argument("--seed", type=int, default=0, help="seeds the surface pyramid drawn per object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from mar3d.data import latent_cache as lc
    from mar3d.data import layout
    from mar3d.training.cache_latents import encode_item_views, vae_fingerprint

    if args.views < 0:
        raise CLIError(f"--views must be >= 0, got {args.views}")
    vae = load_vae_arg(args.vae).eval()
    fingerprint = vae_fingerprint(vae)
    out = Path(args.out)
    if (out / lc.CACHE_JSON).exists() and not lc.matches_vae(lc.read_info(out), fingerprint):
        raise CLIError(f"{out} holds latents of another VAE ({lc.read_info(out).get('vae')}); use a new --out")
    items = []
    for root in map(Path, args.data):
        try:
            ids = layout.prepared_ids(root)
        except FileNotFoundError as e:
            raise CLIError(str(e)) from None
        items.extend((root, i) for i in ids if not args.only or i in args.only)
    if not items:
        raise CLIError("no prepared objects to encode" + (" with the --only ids" if args.only else ""))
    out.mkdir(parents=True, exist_ok=True)
    done = set(lc.cached_ids(out))
    todo = [(root, i) for root, i in items if i not in done]
    counts = sorted(vae.config.token_counts)
    failed = 0
    torch.set_grad_enabled(False)
    began = time.perf_counter()
    for root, item_id in tqdm(todo, desc="cache-latents", unit="object", disable=args.no_progress):
        try:
            latents = encode_item_views(vae, root, item_id, counts, seed=args.seed, batch_size=args.batch_size,
                                        views=args.views)
        except (OSError, ValueError, KeyError) as e:
            tqdm.write(f"failed: {root / item_id}: {e}")
            failed += 1
            continue
        lc.write_item(out, item_id, latents)
    info = lc.summarize(out, args.vae, fingerprint, counts, args.seed)
    stds = ", ".join(f"{n} tokens {s:.3f}" for n, s in info["latent_std"].items())
    print(f"cached {len(todo) - failed} objects in {time.perf_counter() - began:.0f} s, {failed} failed, "
          f"{len(done)} already done -> {out} (latent std: {stds})")
    return 1 if failed else 0
