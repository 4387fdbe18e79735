"""`mar3d reconstruct`: meshes or prepared items through a trained VAE, to inspect what it keeps."""
from __future__ import annotations

import time
from pathlib import Path

from mar3d.cli.common import HelpFormatter, load_vae_arg
from mar3d.cli.errors import CLIError
from mar3d.utils.precision import PRECISION_CHOICES

FORMATS = ("glb", "obj", "ply", "stl")


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name, help="encode and decode shapes with a trained VAE (to inspect it)",
        description=(
            "Reconstruct shapes through a trained Pyramid VAE: sample the surface, encode to TOKENS latent "
            "tokens, decode the occupancy field hierarchically and extract a mesh with marching cubes. "
            "INPUT is a mesh file, a prepared directory (every item in it) or one prepared item folder "
            "(DIR/<id>). Writes OUT/<id>.<format> in the input's own coordinates (or the normalized frame "
            "with --normalized) and, for prepared items, prints the volume IoU against their stored labels."),
        formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="MESH_OR_PREPARED",
                   help="mesh files, prepared directories or prepared item folders")
    p.add_argument("--vae", required=True, metavar="RUN_OR_MODEL_DIR", help="a training run or an exported model")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the meshes (made if missing)")
    p.add_argument("--tokens", type=int, help="latent tokens (default: the largest the VAE was trained for)")
    p.add_argument("--resolution", type=int, default=256, help="marching-cubes grid resolution (up to 512)")
    p.add_argument("--mode", choices=["hierarchical", "dense"], default="hierarchical", help="grid decoding")
    p.add_argument("--format", choices=FORMATS, default="glb", help="mesh file format")
    p.add_argument("--normalized", action="store_true", help="write meshes in the normalized frame")
    p.add_argument("--batch-size", type=int, default=4, help="shapes decoded together")
    p.add_argument("--seed", type=int, default=0, help="seeds the surface samples and pyramid drawn per shape")
    p.add_argument("--dtype", choices=PRECISION_CHOICES, default="auto",
                   help="precision: auto is bf16 autocast where the CPU computes bf16 natively (AVX-512 BF16 or AMX), else fp32 (emulated bf16 is many times slower)")


def _collect(inputs: list[str]):
    from mar3d.data import layout
    from mar3d.pipeline.reconstruct import samples_from_mesh, samples_from_prepared

    loaders = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and (path / layout.META).exists():
            loaders.append((str(path), lambda p=path: samples_from_prepared(p.parent, p.name)))
        elif path.is_dir():
            ids = layout.prepared_ids(path)
            if not ids:
                raise CLIError(f"{path}: a folder with no prepared items (run `mar3d prepare` on meshes first)")
            loaders.extend((f"{path}/{i}", lambda p=path, i=i: samples_from_prepared(p, i)) for i in ids)
        elif path.is_file():
            loaders.append((str(path), lambda p=path: samples_from_mesh(p)))
        else:
            raise CLIError(f"{path}: no such file or folder")
    return loaders


def run(args) -> int:
    import torch

    from mar3d.data.mesh_io import MeshError
    from mar3d.mesh.occupancy import volume_iou
    from mar3d.mesh.latents import latents_to_meshes, query_latents
    from mar3d.pipeline.reconstruct import encode_shapes, to_source_frame
    from mar3d.utils import atomic
    from mar3d.utils.precision import autocast_dtype

    vae = load_vae_arg(args.vae)
    tokens = args.tokens or max(vae.config.token_counts)
    if vae.config.queries == "learned" and tokens not in vae.config.token_counts:
        raise CLIError(f"this VAE has learned queries for {vae.config.token_counts} tokens only")
    if not 8 <= args.resolution <= 512:
        raise CLIError("--resolution must be between 8 and 512")
    dtype = autocast_dtype(args.dtype, "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    shapes, failed = [], 0
    for name, load in _collect(args.inputs):
        try:
            shapes.append(load())
        except MeshError as e:
            print(f"failed: {name}: {e}")
            failed += 1
    for start in range(0, len(shapes), args.batch_size):
        batch = shapes[start:start + args.batch_size]
        began = time.perf_counter()
        latents = encode_shapes(vae, batch, tokens, seed=args.seed, dtype=dtype)
        results = latents_to_meshes(vae, latents, resolution=args.resolution, mode=args.mode, dtype=dtype)
        seconds = (time.perf_counter() - began) / len(batch)
        for shape, latent, result in zip(batch, latents, results):
            line = f"{shape.id}: {len(result.mesh.faces)} faces, {result.queries:,} queries, {seconds:.1f} s"
            if shape.occupancy is not None:
                points, labels = (torch.from_numpy(a) for a in shape.occupancy)
                logits = query_latents(vae, latent[None], points[None], dtype)
                line += f", volume IoU {volume_iou(logits, labels[None].float()).item():.3f}"
            if result.status != "ok":
                line += f" ({result.status}: no surface found)"
                failed += 1
            else:
                mesh = result.mesh if args.normalized else to_source_frame(result.mesh, shape)
                with atomic.atomic_path(out / f"{shape.id}.{args.format}") as tmp:
                    mesh.export(tmp, file_type=args.format)
            print(line)
    print(f"reconstructed {len(shapes) - failed} ok, {failed} failed -> {out}")
    return 1 if failed else 0
