#!/usr/bin/env python
"""End-to-end image -> mesh: the time of each stage for one image, and the MAR sampler's overhead.

Builds a pipeline from freshly initialised models of a config (weights do not change the work done, except
the number of grid cells near the surface: random decoders give a field with some surface), generates a
mesh from one rendered view, and reports:

- the stage breakdown of ``GenerationResult.timings`` (``TIMING_STAGES``: preprocess, encoder, MAR-LR, MAR-HR,
  carving, decode, marching cubes, post-processing) as fractions of the total;
- the sampler overhead: the share of MAR sampling time spent outside the networks (the MAE transformer
  and the diffusion head), i.e. in ordering, masking, gathering and the diffusion update arithmetic.
  Measured with forward hooks in the same run. Target (issue 6): report it; small is good.

    python benchmarks/bench_generate.py [--config tiny] [--image PNG] [--lr-steps 16] [--hr-steps 16]
                                        [--diffusion-steps 50] [--resolution 128] [--out benchmarks/results/generate.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mar3d.config import load_config
from mar3d.models.mar import MAR
from mar3d.models.vae import PyramidVAE
from mar3d.pipeline.pipeline import TIMING_STAGES, MAR3DPipeline, SamplingDefaults
from mar3d.training.config import MARRunConfig, VAERunConfig

REPO = Path(__file__).resolve().parents[1]


class NetworkTimer:
    """Wall time spent inside given modules' forward calls (outermost calls only)."""

    def __init__(self, modules):
        self.seconds, self._depth, self._start = 0.0, 0, 0.0
        for m in modules:
            m.register_forward_pre_hook(self._before)
            m.register_forward_hook(self._after)

    def _before(self, *_):
        if self._depth == 0:
            self._start = time.perf_counter()
        self._depth += 1

    def _after(self, *_):
        self._depth -= 1
        if self._depth == 0:
            self.seconds += time.perf_counter() - self._start


def demo_image() -> Image.Image:
    """A real-looking input: a shaded disc on white (no shared data needed)."""
    y, x = np.mgrid[:256, :256]
    inside = (x - 128) ** 2 + (y - 140) ** 2 < 80 ** 2
    rgba = np.zeros((256, 256, 4), np.uint8)
    rgba[inside] = (200, 120, 60, 255)
    return Image.fromarray(rgba, "RGBA")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tiny", help="vae and mar config name (tiny, small)")
    parser.add_argument("--image", type=Path, help="input image (default: a synthetic cut-out)")
    parser.add_argument("--lr-steps", type=int, default=16)
    parser.add_argument("--hr-steps", type=int, default=16)
    parser.add_argument("--diffusion-steps", type=int, default=50)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="auto",
                        help="as `mar3d generate --dtype` (auto: bf16 only where the hardware has it)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "generate.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    vae = PyramidVAE(load_config(args.config, VAERunConfig, "vae").model).eval()
    mar_config = load_config(args.config, MARRunConfig, "mar").model
    mar_lr = MAR(mar_config).eval()
    mar_hr = MAR(dataclasses.replace(mar_config, stage="hr")).eval()
    defaults = SamplingDefaults(lr_steps=args.lr_steps, hr_steps=args.hr_steps, diffusion_steps=args.diffusion_steps,
                                resolution=args.resolution)
    pipeline = MAR3DPipeline(vae, mar_lr, mar_hr, defaults, "cpu", args.dtype)
    networks = NetworkTimer([m for mar in (mar_lr, mar_hr)
                             for m in (*mar.encoder_blocks, *mar.decoder_blocks, mar.diffusion_head, mar.image_encoder)])
    image = Image.open(args.image) if args.image else demo_image()
    pipeline(image, seed=0)  # warm-up
    networks.seconds = 0.0
    result = pipeline(image, seed=1)[0]
    t = result.timings
    sampling = t["lr"] + t["hr"] + t["encoder"]
    overhead = max(0.0, sampling - networks.seconds) / sampling
    stages = [k for k in TIMING_STAGES if k in t]
    out = {"config": args.config, "dtype": args.dtype, "threads": torch.get_num_threads(), "status": result.status,
           "seconds": t, "fractions": {k: t[k] / t["total"] for k in stages},
           "sampler_overhead_fraction": overhead, "settings": vars(args) | {"image": str(args.image)}}
    print(f"image -> mesh ({args.config} models, random weights, {args.dtype}, {out['threads']} threads, "
          f"lr {args.lr_steps} / hr {args.hr_steps} steps, {args.diffusion_steps} diffusion steps, R {args.resolution})\n")
    print("| stage | seconds | share |\n|---|---:|---:|")
    for k in stages:
        print(f"| {k} | {t[k]:.2f} | {t[k] / t['total']:.0%} |")
    print(f"| total | {t['total']:.2f} | |")
    print(f"\nMAR sampler overhead (time outside the transformer and diffusion head): {overhead:.1%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
