#!/usr/bin/env python
"""VAE decoder throughput: bf16 vs fp32, and achieved FLOP/s against this machine's bf16 matmul FLOP/s.

Grid decoding spends nearly all its time in the decoder's per-query path (docs/method.md §7): Fourier embedding,
query projection, one cross-attention against the cached latent keys/values, the output MLP. This script
times that path on chunks of query points for a VAE config (default: the small demo config, 1024 tokens),
counts its FLOPs analytically, and in the same run measures the bf16 matmul FLOP/s of a large square
matmul, so the ratio is machine-independent. Weights are random (throughput does not depend on them).
Targets (issue 3): decoder achieved FLOP/s >= 50% of the matmul FLOP/s. ``--device cuda`` runs it on a GPU
(the reference matmul is then 8192², large enough to reach a GPU's bf16 peak).

    python benchmarks/bench_vae_decoder.py [--config small] [--tokens 1024] [--queries 262144] [--device cpu]
                                           [--compile]
                                           [--chunk 65536] [--threads N] [--out benchmarks/results/vae_decoder.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mar3d.config import load_config
from mar3d.models.vae import PyramidVAE
from mar3d.training.config import VAERunConfig

TARGET_FRACTION = 0.5


DEVICE = torch.device("cpu")  # set by --device


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, min_seconds: float = 1.0) -> float:
    """Seconds per call, after one warm-up call, repeated for at least ``min_seconds`` (GPU work awaited)."""
    fn()
    sync()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    sync()
    return (time.perf_counter() - start) / calls


def matmul_flops(dtype: torch.dtype) -> float:
    size = 8192 if DEVICE.type == "cuda" else 2048
    a, b = (torch.randn(size, size, dtype=dtype, device=DEVICE) for _ in range(2))
    return 2 * size**3 / timed(lambda: a @ b)


def query_flops(width: int, tokens: int, octaves: int) -> float:
    """FLOPs per query point of the decoder's per-query path (multiply-add = 2)."""
    fourier = 3 * (1 + 2 * octaves)
    return (2 * fourier * width  # query embedding
            + 2 * 2 * width * width  # attention q and output projections
            + 2 * 2 * tokens * width  # scores and weighted values
            + 2 * 2 * 4 * width * width  # MLP (4x hidden)
            + 2 * width)  # logit


def part_fractions(width: int, heads: int, tokens: int, chunk: int) -> dict:
    """FLOP/s of the two kinds of work in the per-query path, each against the bf16 matmul FLOP/s:
    the attention kernel (scores + weighted values over the cached keys/values) and the linear layers."""
    import torch.nn.functional as F

    options = dict(dtype=torch.bfloat16, device=DEVICE)
    q = torch.randn(1, heads, chunk, width // heads, **options)
    k, v = torch.randn(2, 1, heads, tokens, width // heads, **options)
    x = torch.randn(chunk, width, **options)
    w = torch.randn(4 * width, width, **options)
    peak = matmul_flops(torch.bfloat16)
    attention = 4 * chunk * tokens * width / timed(lambda: F.scaled_dot_product_attention(q, k, v))
    linear = 2 * chunk * width * 4 * width / timed(lambda: F.linear(x, w))
    flops = query_flops(width, tokens, 8)
    return {"attention_fraction_of_matmul": attention / peak, "linear_fraction_of_matmul": linear / peak,
            "attention_share_of_flops": 4 * tokens * width / flops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=2**18)
    parser.add_argument("--chunk", type=int, default=2**16)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--compile", action="store_true",
                        help="also time the bf16 path under torch.compile (fuses the element-wise work; an "
                             "experiment: mesh extraction does not compile the decoder)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "vae_decoder.json"))
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_config(args.config, VAERunConfig, "vae").model
    vae = PyramidVAE(config).eval().to(DEVICE)
    latents = torch.randn(1, args.tokens, config.latent_channels, device=DEVICE)
    points = torch.rand(1, args.queries, 3, device=DEVICE) * 2.1 - 1.05
    flops = query_flops(config.width, args.tokens, config.fourier_octaves)

    variants = [("fp32", torch.float32, vae.query), ("bf16", torch.bfloat16, vae.query)]
    if args.compile:
        variants.append(("bf16_compiled", torch.bfloat16, torch.compile(vae.query, dynamic=False)))
    rows = {}
    for name, dtype, query in variants:
        with torch.no_grad(), torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            cache = vae.prepare_decoder(latents)
            seconds = timed(lambda: [query(cache, c) for c in points.split(args.chunk, dim=1)])
        rows[name] = {"queries_per_s": args.queries / seconds, "flops_per_s": flops * args.queries / seconds,
                      "matmul_flops_per_s": matmul_flops(dtype)}
    rows["parts"] = part_fractions(config.width, config.heads, args.tokens, args.chunk)
    result = {
        "config": args.config, "width": config.width, "tokens": args.tokens, "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu",
        "flops_per_query": flops, **rows,
        "bf16_over_fp32_throughput": rows["bf16"]["queries_per_s"] / rows["fp32"]["queries_per_s"],
        "bf16_fraction_of_matmul": rows["bf16"]["flops_per_s"] / rows["bf16"]["matmul_flops_per_s"],
    }
    print(f"VAE decoder ({args.config}: width {config.width}, {args.tokens} tokens, "
          f"{flops / 1e6:.2f} MFLOP per query, {result['device']}, {result['threads']} threads)\n")
    print("| precision | queries/s | decoder GFLOP/s | matmul GFLOP/s | fraction |")
    print("|---|---:|---:|---:|---:|")
    for name, _, _ in variants:
        r = rows[name]
        print(f"| {name} | {r['queries_per_s']:,.0f} | {r['flops_per_s'] / 1e9:.1f} | "
              f"{r['matmul_flops_per_s'] / 1e9:.1f} | {r['flops_per_s'] / r['matmul_flops_per_s']:.0%} |")
    parts = rows["parts"]
    print(f"\nwhere the time goes (bf16, one {args.chunk}-query chunk): attention kernel "
          f"{parts['attention_fraction_of_matmul']:.0%} of matmul FLOP/s, linear layers "
          f"{parts['linear_fraction_of_matmul']:.0%}; attention is {parts['attention_share_of_flops']:.0%} of the FLOPs")
    fraction = result["bf16_fraction_of_matmul"]
    print(f"\nbf16 / fp32 decoder throughput: {result['bf16_over_fp32_throughput']:.2f}x")
    print(f"bf16 decoder FLOP/s / bf16 matmul FLOP/s: {fraction:.0%} "
          f"(target >= {TARGET_FRACTION:.0%}: {'PASS' if fraction >= TARGET_FRACTION else 'FAIL'})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
