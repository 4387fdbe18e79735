#!/usr/bin/env python
"""Benchmark hierarchical against dense mesh extraction at 256^3 on real YCB scans (docs/method.md §7).

Two occupancy fields per scan, in the normalized frame the training data uses:

* winding: the scan's exact occupancy, 20 * (generalized winding number - 0.5) from libigl. Real, but its
  cost per point is unlike a decoder's: libigl's tree descends deeper near the surface (~3 us per point
  there against ~0.3 us far away), which is exactly where hierarchical decoding queries, so its wall-time
  ratio understates what a decoder gains. Its dense grid is also the reference surface for the next field.
* decoder: a stand-in with a neural decoder's uniform cost per query. Logits are the winding field's dense
  grid, trilinearly interpolated (exact at the grid's corners, so the surface is the scan's), plus 1e-3 times
  a random-init head shaped like the VAE decoder's per-query path (Fourier embedding, query projection, one
  cross-attention against 128 cached latent tokens of width 64, output MLP). A real decoder is wider and
  costs more per query, which only moves the wall-time ratio closer to the query ratio.

Both modes run back to back in one process on the same field; ratios are dense / hierarchical. Decode time
is the field queries plus the refinement bookkeeping; marching cubes is timed separately (it is the same
work in both modes). Quality: the share of grid corners with the same inside/outside sign, and the
distance between the two meshes after the default post-processing (floaters dropped), in cells.
Targets at R=256 on the decoder field: >= 10x fewer queries and >= 8x less decode wall time.

    python benchmarks/bench_extraction.py [--objects 025_mug 011_banana] [--resolution 256] [--threads N]
                                          [--out benchmarks/results/extraction.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import trimesh

from mar3d.data.mesh_io import load_mesh
from mar3d.data.normalize import DECODE_BOX, normalization
from mar3d.data.sampling import winding_numbers
from mar3d.evaluation.surface import surface_distances
from mar3d.mesh import PostprocessOptions, decode_grid, grid_to_mesh, postprocess

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MAR3D_SHARED", REPO.parent / "shared")) / "data"
TARGET_QUERY_RATIO = 10.0
TARGET_TIME_RATIO = 8.0
WINDING_SCALE = 20.0


def winding_field(name: str):
    """(B=1) logits_fn of the scan's winding-number occupancy in the normalized frame."""
    mesh = load_mesh(SHARED / "ycb" / f"{name}.glb").geometry
    center, scale = normalization(mesh.vertices)
    vertices, faces = (mesh.vertices - center) * scale, np.asarray(mesh.faces)

    def logits_fn(points: torch.Tensor) -> torch.Tensor:
        w = winding_numbers(vertices, faces, points[0].numpy().astype(np.float64))
        return torch.from_numpy(WINDING_SCALE * (w - 0.5)).float()[None]
    return logits_fn


class DecoderStandIn(torch.nn.Module):
    """Interpolated reference grid for the surface + a random-init decoder head for the cost per query."""

    def __init__(self, grid: torch.Tensor, box: float = DECODE_BOX, width: int = 64, tokens: int = 128,
                 frequencies: int = 8, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        # grid_sample indexes (D, H, W) with coordinates (x, y, z) = (W, H, D): store the grid as z, y, x.
        self.register_buffer("grid", grid.permute(2, 1, 0)[None, None].contiguous())
        self.box = box
        self.register_buffer("freqs", 2.0 ** torch.arange(frequencies) * torch.pi)
        self.embed = torch.nn.Linear(3 + 6 * frequencies, width)
        self.query = torch.nn.Linear(width, width)
        self.register_buffer("keys", torch.randn(1, tokens, width, generator=generator))
        self.register_buffer("values", torch.randn(1, tokens, width, generator=generator))
        self.out = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.GELU(), torch.nn.Linear(width, 1))

    def head(self, points: torch.Tensor) -> torch.Tensor:
        """(B, Q, 3) -> (B, Q): the per-query work of a cross-attention occupancy decoder."""
        x = (points[..., None] * self.freqs).flatten(-2)
        x = self.query(self.embed(torch.cat([points, x.sin(), x.cos()], dim=-1)))
        b = points.shape[0]
        x = F.scaled_dot_product_attention(x, self.keys.expand(b, -1, -1), self.values.expand(b, -1, -1))
        return self.out(x).squeeze(-1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        b, q, _ = points.shape
        where = (points / self.box).view(b, q, 1, 1, 3)
        occupancy = F.grid_sample(self.grid.expand(b, -1, -1, -1, -1), where, mode="bilinear",
                                  align_corners=True).view(b, q)
        return occupancy + 1e-3 * self.head(points)


def extract(logits_fn, mode: str, resolution: int) -> dict:
    decoded = decode_grid(logits_fn, 1, resolution, mode)
    start = time.perf_counter()
    mesh, status = grid_to_mesh(decoded.values[0])
    return {"grid": decoded.values[0], "mesh": mesh, "status": status, "queries": decoded.queries[0],
            "decode_s": decoded.seconds, "marching_cubes_s": time.perf_counter() - start}


def mesh_distance(a: trimesh.Trimesh, b: trimesh.Trimesh, count: int = 50_000) -> tuple[float, float]:
    """Mean and max distance from surface samples of each mesh to the other's surface, both ways."""
    d = np.concatenate(surface_distances(a, b, count))
    return float(d.mean()), float(d.max())


def compare(dense: dict, fast: dict, resolution: int) -> dict:
    cell = 2 * DECODE_BOX / resolution
    agreement = ((dense["grid"] > 0) == (fast["grid"] > 0)).double().mean().item()
    clean = [postprocess(r["mesh"], PostprocessOptions())[0] for r in (dense, fast)]
    mean, worst = mesh_distance(*clean)
    return {
        "query_ratio": dense["queries"] / fast["queries"],
        "decode_time_ratio": dense["decode_s"] / fast["decode_s"],
        "total_time_ratio": (dense["decode_s"] + dense["marching_cubes_s"])
                            / (fast["decode_s"] + fast["marching_cubes_s"]),
        "sign_agreement": agreement,
        "mesh_distance_mean_cells": mean / cell,
        "mesh_distance_max_cells": worst / cell,
        "faces": [len(c.faces) for c in clean],
    }


def summary(run: dict) -> dict:
    return {k: run[k] for k in ("queries", "decode_s", "marching_cubes_s", "status")}


def bench_object(name: str, resolution: int) -> dict:
    result = {}
    winding = winding_field(name)
    runs = {mode: extract(winding, mode, resolution) for mode in ("dense", "hierarchical")}
    result["winding"] = {**{m: summary(r) for m, r in runs.items()},
                         **compare(runs["dense"], runs["hierarchical"], resolution)}
    reference = runs["dense"]["grid"]

    with torch.no_grad():
        decoder = DecoderStandIn(reference)
        probe = torch.rand(1, 2**16, 3) * 2 - 1
        decoder(probe)
        start = time.perf_counter()
        decoder(probe)
        per_query_us = (time.perf_counter() - start) / 2**16 * 1e6
    runs = {mode: extract(decoder, mode, resolution) for mode in ("dense", "hierarchical")}
    result["decoder"] = {**{m: summary(r) for m, r in runs.items()},
                         **compare(runs["dense"], runs["hierarchical"], resolution), "per_query_us": per_query_us}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", nargs="+", default=["025_mug", "011_banana"],
                        help="YCB scan names under <shared>/data/ycb")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "extraction.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    results = {}
    for name in args.objects:
        results[name] = bench_object(name, args.resolution)
        for field, r in results[name].items():
            print(f"{name:20s} {field:8s} queries {r['dense']['queries']:>9d} / {r['hierarchical']['queries']:>8d}"
                  f" = {r['query_ratio']:5.1f}x   decode {r['dense']['decode_s']:6.1f} s / "
                  f"{r['hierarchical']['decode_s']:5.2f} s = {r['decode_time_ratio']:5.1f}x   with marching cubes"
                  f" {r['total_time_ratio']:4.1f}x   sign agreement {r['sign_agreement']:.6f}   mesh distance"
                  f" mean {r['mesh_distance_mean_cells']:.4f} max {r['mesh_distance_max_cells']:.3f} cells",
                  flush=True)

    decoder = [r["decoder"] for r in results.values()]
    worst_queries = min(r["query_ratio"] for r in decoder)
    worst_time = min(r["decode_time_ratio"] for r in decoder)
    passed = worst_queries >= TARGET_QUERY_RATIO and worst_time >= TARGET_TIME_RATIO
    print(f"decoder field, worst object: {worst_queries:.1f}x fewer queries (target {TARGET_QUERY_RATIO}x), "
          f"{worst_time:.1f}x less decode time (target {TARGET_TIME_RATIO}x): {'PASS' if passed else 'FAIL'}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()},
        "resolution": args.resolution,
        "targets": {"query_ratio": TARGET_QUERY_RATIO, "decode_time_ratio": TARGET_TIME_RATIO},
        "worst": {"query_ratio": worst_queries, "decode_time_ratio": worst_time, "pass": passed},
        "objects": results,
    }, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
