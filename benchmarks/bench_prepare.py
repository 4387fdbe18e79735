#!/usr/bin/env python
"""Benchmark `mar3d prepare` on real scans against a watertight-remesh baseline, on one CPU core.

What is measured, per mesh (the 58 textured YCB scans by default):

* ours: ``mar3d.data.prepare.prepare_item`` with the default ``PrepareSettings`` (200k surface points,
  500k occupancy labels from the generalized winding number of the raw mesh, 56 views at 512x512 over
  OSMesa), with the load / samples / views seconds it reports.
* baseline: the route CraftsMan recommends. The same loader and normalization, then mesh2sdf makes the mesh
  watertight (256^3 grid, fix=True, level 2/256), and the same numbers of surface points (trimesh, on the
  remesh) and occupancy labels (sign of the remesh's SDF, trilinear) are drawn and written like ours.
  It renders nothing, so it is compared with our samples alone and with our samples + views.

Why: docs/method.md §3 labels occupancy with winding numbers on the raw mesh instead of remeshing first.
Targets: <= 4 s per mesh for samples + 56 views on one core, >= 10x faster than the baseline, <= 2 GB peak
memory per worker. Each side runs its items in sequence in its own fresh spawned process pinned to one core,
so the peak RSS is that of one `mar3d prepare` worker. mesh2sdf takes over a minute per mesh on one core, so
the baseline runs on an evenly spaced subset (--baseline-limit); ratios use only the objects both finished.

    python benchmarks/bench_prepare.py [--data DIR] [--limit N] [--baseline-limit N] [--out JSON]
"""
from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from mar3d.data import layout
from mar3d.data.batch import discover_inputs
from mar3d.data.mesh_io import load_mesh
from mar3d.data.normalize import DECODE_BOX, normalization
from mar3d.data.prepare import PrepareSettings, item_rng, prepare_item
from mar3d.data.sampling import NEAR_SURFACE_FRACTION, NEAR_SURFACE_SIGMAS
from mar3d.utils import atomic

REPO = Path(__file__).resolve().parent.parent
SDF_SIZE = 256  # CraftsMan's watertight remesh: mesh2sdf at 256^3, level 2/256
TARGET_SECONDS = 4.0
TARGET_SPEEDUP = 10.0
TARGET_RSS_MB = 2048.0
RESULT = {True: "PASS", False: "FAIL", None: "n/a"}
# Thread pools read these when numpy, libigl, mesh2sdf and llvmpipe (OSMesa) load in a fresh worker.
ONE_THREAD_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "LP_NUM_THREADS", "IGL_NUM_THREADS",
                                         "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def pin_to_one_core() -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def run_ours(source: str, work_dir: str) -> dict:
    """prepare_item with the default settings; the outputs are deleted after timing, to spare the disk."""
    import mar3d.data.render  # noqa: F401  a one-off import per worker, kept out of the first mesh's time

    item_id = Path(source).stem
    meta = prepare_item(source, item_id, work_dir, PrepareSettings())
    shutil.rmtree(layout.item_dir(work_dir, item_id))
    seconds = dict(meta["seconds"], samples_views=round(meta["seconds"]["samples"] + meta["seconds"]["views"], 4))
    return {"seconds": seconds, "peak_rss_mb": meta["peak_rss_mb"], "watertight": meta["watertight"]}


def run_baseline(source: str, work_dir: str) -> dict:
    """mesh2sdf watertight remesh, then the same sample counts, point distribution and file as ours."""
    import mesh2sdf  # imported here so that only the baseline worker's memory counts it
    import trimesh
    from scipy.ndimage import map_coordinates

    settings = PrepareSettings()
    item_id = Path(source).stem
    rng = item_rng(settings.seed, item_id)
    start = time.perf_counter()
    mesh = load_mesh(source, max_faces=settings.max_faces)
    center, scale = normalization(mesh.geometry.vertices)
    vertices = (mesh.geometry.vertices - center) * scale
    loaded = time.perf_counter()

    sdf, remesh = mesh2sdf.compute(vertices, mesh.geometry.faces, size=SDF_SIZE, fix=True,
                                   level=2 / SDF_SIZE, return_mesh=True)
    remeshed = time.perf_counter()
    surface_points, face = trimesh.sample.sample_surface(remesh, settings.surface_samples, seed=rng)
    near = int(round(settings.occupancy_samples * NEAR_SURFACE_FRACTION))
    near_points, _ = trimesh.sample.sample_surface(remesh, near, seed=rng)
    sigma = np.where(np.arange(near) < near // 2, *NEAR_SURFACE_SIGMAS)[:, None]
    occ_points = np.concatenate([
        near_points + rng.standard_normal((near, 3)) * sigma,
        rng.uniform(-DECODE_BOX, DECODE_BOX, size=(settings.occupancy_samples - near, 3)),
    ])
    # mesh2sdf's grid: sdf[i, j, k] lies at (x, y, z) = -1 + 2 * (i, j, k) / size; beyond it is outside.
    grid = (occ_points + 1) * SDF_SIZE / 2
    occ_labels = (map_coordinates(sdf, grid.T, order=1, cval=1.0) < 0).astype(np.uint8)
    atomic.write_npz(
        layout.item_dir(work_dir, item_id) / layout.SAMPLES,
        surface_points=surface_points.astype(np.float32),
        surface_normals=remesh.face_normals[face].astype(np.float32),
        occ_points=occ_points.astype(np.float32),
        occ_labels=occ_labels,
    )
    sampled = time.perf_counter()
    shutil.rmtree(layout.item_dir(work_dir, item_id))
    return {
        "seconds": {"load": loaded - start, "remesh": remeshed - loaded, "samples": sampled - loaded,
                    "total": sampled - start},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "remesh_faces": len(remesh.faces),
        "remesh_watertight": bool(remesh.is_watertight),
    }


def with_cpu_time(fn: Callable[[str, str], dict], source: str, work_dir: str) -> dict:
    """Run ``fn`` in the worker and add the CPU seconds of its process (all threads, llvmpipe's included).

    On a quiet machine CPU time equals wall time; less CPU than wall means other processes took the core.
    """
    start = time.process_time()
    result = fn(source, work_dir)
    result["seconds"]["cpu"] = time.process_time() - start
    return result


def run_side(fn: Callable[[str, str], dict], sources: list[Path], work_dir: str, desc: str) -> dict[str, dict]:
    """Items in sequence in one spawned worker on one core; a failure, even a crash, is recorded, not raised."""
    os.environ.update(ONE_THREAD_ENV)  # inherited by the worker, which imports everything anew
    context = multiprocessing.get_context("spawn")  # a fresh process: clean GL state, its own peak RSS

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(1, mp_context=context, initializer=pin_to_one_core)

    results = {}
    pool = new_pool()
    for source in tqdm(sources, desc=desc, unit="mesh"):
        try:
            results[source.stem] = pool.submit(with_cpu_time, fn, str(source), work_dir).result()
        except BrokenProcessPool:
            results[source.stem] = {"error": "the worker process died (native crash, or out of memory)"}
            pool.shutdown()
            pool = new_pool()
        except Exception as e:
            results[source.stem] = {"error": f"{type(e).__name__}: {str(e).strip()[:300]}"}
    pool.shutdown()
    return results


def stage_stats(results: dict[str, dict], stage: str, names: list[str] | None = None) -> dict | None:
    values = [r["seconds"][stage] for name, r in results.items()
              if "seconds" in r and (names is None or name in names)]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "median": float(np.median(values)), "n": len(values)}


def summarize(ours: dict[str, dict], baseline: dict[str, dict]) -> dict:
    common = [name for name in baseline if "seconds" in baseline[name] and "seconds" in ours.get(name, {})]

    def ratio(base_stage: str, our_stage: str) -> float | None:
        if not common:
            return None
        return stage_stats(baseline, base_stage, common)["mean"] / stage_stats(ours, our_stage, common)["mean"]

    def cpu_share(results: dict[str, dict]) -> float | None:
        done = [r["seconds"] for r in results.values() if "seconds" in r]
        return sum(s["cpu"] for s in done) / sum(s["total"] for s in done) if done else None

    def peak(results: dict[str, dict]) -> float | None:
        return max((r["peak_rss_mb"] for r in results.values() if "peak_rss_mb" in r), default=None)

    return {
        "ours": {s: stage_stats(ours, s) for s in ("load", "samples", "views", "samples_views", "total", "cpu")},
        "baseline": {s: stage_stats(baseline, s) for s in ("load", "remesh", "samples", "total", "cpu")},
        "common_objects": common,
        "speedup": {"samples": ratio("samples", "samples"),
                    "samples_views": ratio("samples", "samples_views"),
                    "total": ratio("total", "total"),
                    "cpu": ratio("cpu", "cpu")},
        "cpu_share": {"ours": cpu_share(ours), "baseline": cpu_share(baseline)},
        "peak_rss_mb": {"ours": peak(ours), "baseline": peak(baseline)},
    }


def targets(summary: dict) -> list[dict]:
    """Each target with its measured value and pass (None where that side was not measured)."""
    speedup = summary["speedup"]
    rows = [
        ("samples + 56 views at 512^2, mean s per mesh, one core", "<= 4 s",
         (summary["ours"]["samples_views"] or {}).get("mean"), lambda v: v <= TARGET_SECONDS),
        ("speed-up over baseline, samples only", ">= 10x", speedup["samples"], lambda v: v >= TARGET_SPEEDUP),
        ("speed-up over baseline, our samples + views vs its samples", ">= 10x", speedup["samples_views"],
         lambda v: v >= TARGET_SPEEDUP),
        ("peak RSS per worker, MB", "<= 2048", summary["peak_rss_mb"]["ours"], lambda v: v <= TARGET_RSS_MB),
    ]
    return [{"target": t, "goal": goal, "measured": value, "pass": None if value is None else bool(ok(value))}
            for t, goal, value, ok in rows]


def fmt(value: float | None, suffix: str = "", digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def markdown(summary: dict, checks: list[dict]) -> str:
    ours, base, speedup, share = summary["ours"], summary["baseline"], summary["speedup"], summary["cpu_share"]

    def cells(stats: dict | None) -> str:
        return f"{fmt(stats and stats['mean'])} | {fmt(stats and stats['median'])}"

    rows = [
        ("load", ours["load"], base["load"], None),
        ("remesh (mesh2sdf 256^3)", None, base["remesh"], None),
        ("samples (200k surface + 500k occupancy)", ours["samples"], base["samples"], speedup["samples"]),
        ("views (56 at 512^2)", ours["views"], None, None),
        ("samples + views (baseline: samples)", ours["samples_views"], base["samples"], speedup["samples_views"]),
        ("total", ours["total"], base["total"], speedup["total"]),
        ("CPU seconds of the worker per mesh", ours["cpu"], base["cpu"], speedup["cpu"]),
    ]
    n_ours = (ours["total"] or {}).get("n", 0)
    n_base = (base["total"] or {}).get("n", 0)
    lines = [
        "| seconds per mesh | ours mean | ours median | baseline mean | baseline median | baseline / ours |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {name} | {cells(o)} | {cells(b)} | {fmt(r, 'x')} |" for name, o, b, r in rows),
        f"| peak RSS per worker (MB) | {fmt(summary['peak_rss_mb']['ours'], digits=0)} | | "
        f"{fmt(summary['peak_rss_mb']['baseline'], digits=0)} | | |",
        "",
        f"Ours over {n_ours} objects, baseline over {n_base}; the ratios (means, baseline / ours) over the "
        f"{len(summary['common_objects'])} objects both ran. CPU time / wall time of the worker: ours "
        f"{fmt(share['ours'] and 100 * share['ours'], '%', 0)}, baseline "
        f"{fmt(share['baseline'] and 100 * share['baseline'], '%', 0)} (100%: the worker had its core to "
        "itself; less: other processes took some of it, and the wall times above are inflated).",
        "",
        "| target | goal | measured | result |",
        "|---|---|---:|:---:|",
        *(f"| {c['target']} | {c['goal']} | {fmt(c['measured'])} | {RESULT[c['pass']]} |"
          for c in checks),
    ]
    return "\n".join(lines)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def code_version() -> str:
    """The commit measured, flagged if the code it runs (mar3d/data, mar3d/utils) has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    dirty = " + uncommitted changes" if git("status", "--porcelain", "mar3d/data", "mar3d/utils") else ""
    return git("rev-parse", "--short", "HEAD") + dirty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ycb",
                        help="folder of meshes (default: ../shared/data/ycb from the repository root)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N objects")
    parser.add_argument("--baseline-limit", type=int, default=8,
                        help="run the baseline on N evenly spaced objects of those (default 8: mesh2sdf takes "
                             "over a minute per mesh on one core); 0 skips it")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "prepare.json")
    args = parser.parse_args()

    sources, _ = discover_inputs([str(args.data)])
    sources = sources[:args.limit]
    if not sources:
        sys.exit(f"no mesh files in {args.data}")
    k = min(max(args.baseline_limit, 0), len(sources))
    baseline_sources = [sources[i * len(sources) // k] for i in range(k)]
    version = code_version()
    subset = ": " + ", ".join(s.stem for s in baseline_sources) if 0 < k < len(sources) else ""
    print(f"mar3d at {version}; {len(sources)} objects from {args.data}; "
          f"baseline on {k} of them (--baseline-limit){subset}")

    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_prepare-") as work_dir:
        ours = run_side(run_ours, sources, work_dir, "ours")
        baseline = run_side(run_baseline, baseline_sources, work_dir, "baseline (mesh2sdf)")

    summary = summarize(ours, baseline)
    checks = targets(summary)
    print()
    print(markdown(summary, checks))
    for side, results in (("ours", ours), ("baseline", baseline)):
        for name, r in results.items():
            if "error" in r:
                print(f"FAILED ({side}) {name}: {r['error']}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "mar3d_commit": version,
        "cpu": cpu_model(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        "settings": asdict(PrepareSettings()),
        "baseline": {"mesh2sdf_size": SDF_SIZE, "level": 2 / SDF_SIZE,
                     "objects": [s.stem for s in baseline_sources]},
        "summary": summary,
        "targets": checks,
        "objects": {"ours": ours, "baseline": baseline},
    }, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
