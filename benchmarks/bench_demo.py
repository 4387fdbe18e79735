#!/usr/bin/env python
"""What `mar3d generate` costs per image with the settings it actually uses: the time the README promises.

Runs the bundled demo model (or --model) exactly as `mar3d generate` does by default — the model folder's
defaults, ``--dtype auto``, the ``fast`` quality preset — on the bundled example images, one at a time, and
in the same run with each other preset (``--quality high``) and any --variant, so the ratios hold on a
noisy machine. Prints per-stage seconds, the first image (which pays for warm-up) apart, the machine it
ran on (CPU model, cores, torch threads, native bf16 or not) and whether the fast preset meets the target
(TARGET_SECONDS per image on this machine). With --meshes DIR it also writes each variant's meshes to
DIR/<variant>/<name>.glb, for `mar3d evaluate` (how the defaults were chosen: docs/benchmarks.md).

    python benchmarks/bench_demo.py [--model DIR] [--images N] [--variant NAME:key=value,key=value ...]
                                    [--meshes DIR] [--out benchmarks/results/demo.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch

from bench_prepare import cpu_model  # this folder's scripts share it
from mar3d.pipeline.pipeline import TIMING_STAGES, MAR3DPipeline
from mar3d.utils.precision import cpu_has_fast_bf16
from mar3d.pipeline.settings import DEMO_MODEL_DIR, QUALITY_PRESETS

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 15.0  # per image, fast preset, after the first (issue 16)


def machine() -> dict:
    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "native_bf16": cpu_has_fast_bf16(), "torch": torch.__version__,
            "load_average": os.getloadavg()[0]}


def parse_variant(text: str) -> tuple[str, dict]:
    """"NAME:key=value,key=value" -> (NAME, settings); values are JSON: ints, floats, true / false (use_hr)."""
    name, _, body = text.partition(":")
    settings = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        settings[key] = json.loads(value)
    return name, settings


def run_variant(pipeline: MAR3DPipeline, images: list[Path], settings: dict, meshes: Path | None) -> dict:
    rows = []
    for image in images:
        [result] = pipeline(image, seed=0, **settings)
        rows.append({"image": image.stem, "status": result.status, "faces": len(result.mesh.faces),
                     **{k: result.timings.get(k, 0.0) for k in (*TIMING_STAGES, "total")}})
        if meshes is not None and result.ok:
            meshes.mkdir(parents=True, exist_ok=True)
            result.mesh.export(meshes / f"{image.stem}.glb")
    steady = rows[1:] or rows
    return {"settings": settings, "first_image_seconds": rows[0]["total"],
            "mean_seconds": statistics.mean(r["total"] for r in steady),
            "stage_means": {k: statistics.mean(r[k] for r in steady) for k in TIMING_STAGES},
            "mean_faces": statistics.mean(r["faces"] for r in rows), "images": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEMO_MODEL_DIR, help="pipeline folder (default: the demo)")
    parser.add_argument("--images", type=int, default=4, help="example images per variant (the first is warm-up)")
    parser.add_argument("--dtype", default="auto", help="as `mar3d generate --dtype`")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:key=value,...",
                        help="extra settings to time beside the presets, e.g. r160:resolution=160")
    parser.add_argument("--presets", nargs="+", default=list(QUALITY_PRESETS), help="quality presets to time")
    parser.add_argument("--meshes", type=Path, help="write each variant's meshes under this folder")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "demo.json")
    args = parser.parse_args()
    images = sorted((REPO / "examples").glob("*.png"))[:args.images]
    pipeline = MAR3DPipeline.from_pretrained(args.model, dtype=args.dtype)
    variants = {name: dict(QUALITY_PRESETS[name]) for name in args.presets}
    variants.update(parse_variant(v) for v in args.variant)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cpus']} CPUs, {info['torch_threads']} torch threads, native bf16: "
          f"{info['native_bf16']}, load {info['load_average']:.1f}; dtype {args.dtype} -> MARs "
          f"{pipeline.mar_dtype}, decoder {pipeline.decoder_dtype}; {len(images)} images per variant\n")
    results = {}
    for name, settings in variants.items():
        results[name] = run_variant(pipeline, images, settings,
                                    args.meshes / name if args.meshes else None)
        r = results[name]
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stage_means"].items() if v >= 0.05)
        print(f"{name:>10}: {r['mean_seconds']:.1f} s per image (first {r['first_image_seconds']:.1f} s; {stages}); "
              f"{r['mean_faces']:,.0f} faces", flush=True)
    fast = results.get("fast")
    targets = []
    if fast:
        targets.append({"target": f"fast preset, seconds per image on this machine (goal <= {TARGET_SECONDS:g})",
                        "measured": fast["mean_seconds"], "goal": f"<= {TARGET_SECONDS:g}",
                        "pass": fast["mean_seconds"] <= TARGET_SECONDS})
        for name, r in results.items():
            if name != "fast":
                print(f"{name} / fast time: {r['mean_seconds'] / fast['mean_seconds']:.2f}x")
    out = {"machine": info, "model": str(args.model), "dtype": args.dtype, "variants": results, "targets": targets,
           "ratios_over_fast": {n: r["mean_seconds"] / fast["mean_seconds"] for n, r in results.items()} if fast else {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
