#!/usr/bin/env python3
"""Diagnose where the bundled demo model loses quality (docs/results.md, "Diagnosis: where the quality is lost").

Four questions, one stage each; every number goes to OUT/diagnose.json (and each stage's pieces are cached
under OUT/cache/, so a killed run resumes where it stopped):

  vae       Q1: the VAE posterior mean vs a sample (z = mean + std * eps), 128 and 512 tokens, on the 10
            held-out YCB objects and 10 training ones: volume IoU on the stored uniform / near-surface
            points, and the protocol's CD / F-score / NC of the marching-cubes mesh against the source
            mesh (as the "VAE ceiling" row of docs/results.md: own frame, --align none). Also Q3's surface
            noise: the same scores after Taubin smoothing of the reconstruction.
  generate  Q2: `mar3d generate` on view 0 of the held-out objects (examples/) and of the training objects,
            `mar3d evaluate --views PREPARED --view 0` (known camera), as scripts/evaluate_demo.sh does.
  shape     Q3: where the F-score goes: bounding-box extents and aspect of prediction vs ground truth, the
            score after fixing the prediction's per-axis extents, a shape-free ellipsoid with the true box,
            a sphere, and per-object scores against the object's thickness.
  stripes   Q4: where the grid-aligned stripes come from: dense vs hierarchical decoding of the same
            latents, the field sampled off the grid (surface height profiles along lines, their spectra),
            marching cubes' vertex error on the logit profile, the decoder's use of each Fourier octave, and
            axis-aligned normals of meshes decoded on the field's grid and on a rotated grid.

Usage (from the repository root, after `mar3d prepare ../shared/data/ycb --out runs/prepared/ycb --up-axis z`):
    .venv/bin/python scripts/diagnose_demo.py                       # every stage
    .venv/bin/python scripts/diagnose_demo.py --stages vae stripes  # some
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("vae", "generate", "shape", "stripes")
# Training YCB objects, each a counterpart of a held-out one (box, can, fruit, mug, bottle, two thin tools,
# ball, cup, toy airplane).
TRAIN_IDS = ("003_cracker_box", "005_tomato_soup_can", "013_apple", "019_pitcher_base", "022_windex_bottle",
             "030_fork", "042_adjustable_wrench", "056_tennis_ball", "065-a_cups", "072-c_toy_airplane")
STRIPE_IDS = ("004_sugar_box", "025_mug", "055_baseball")
THRESHOLDS = (0.1, 0.05, 0.02, 0.01)
AXIS_DEG = (5.0, 10.0)  # normals within this angle of a coordinate axis count as axis-aligned


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prepared", default="runs/prepared/ycb", help="prepared YCB directory (mar3d prepare --up-axis z)")
    p.add_argument("--model", default="mar3d/assets/demo_model", help="pipeline model folder")
    p.add_argument("--out", default="runs/diagnose", help="output folder (diagnose.json, cache/, generate/)")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to run")
    p.add_argument("--holdout", default="mar3d/configs/holdout/ycb.txt", help="held-out id list")
    p.add_argument("--train-ids", nargs="+", default=list(TRAIN_IDS), help="training YCB objects to compare")
    p.add_argument("--tokens", nargs="+", type=int, default=[128, 512], help="VAE token counts (Q1)")
    p.add_argument("--vae-resolution", type=int, default=256, help="marching-cubes grid of the VAE reconstructions")
    p.add_argument("--gen-resolution", type=int, default=128, help="`mar3d generate --resolution` (Q2)")
    p.add_argument("--gen-dtype", default="bf16", choices=["auto", "fp32", "bf16"], help="`mar3d generate --dtype`")
    p.add_argument("--gen-variants", nargs="+", default=["lr_hr"], choices=["lr_hr", "lr_only"],
                   help="generation variants: the full cascade, and/or MAR-LR only (--no-hr)")
    p.add_argument("--stripe-ids", nargs="+", default=list(STRIPE_IDS), help="objects of the stripes stage (Q4)")
    p.add_argument("--dense-resolution", type=int, default=128, help="grid of the dense vs hierarchical comparison")
    p.add_argument("--stripe-resolution", type=int, default=256, help="grid of the rotated-grid comparison")
    p.add_argument("--profile-lines", type=int, default=2048, help="lines per surface height profile (Q4)")
    p.add_argument("--seed", type=int, default=0, help="seed of pyramids, posterior samples, generation, sampling")
    p.add_argument("--threads", type=int, default=2, help="torch / BLAS threads (also for the subprocesses)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N objects of each list (a quick check)")
    p.add_argument("--cached-only", action="store_true",
                   help="compute nothing new: summarize the objects already measured (after a run cut short)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------- helpers
def log(*parts):
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


CACHED_ONLY = False  # --cached-only: cached() returns None instead of computing


def cached(path: Path, compute):
    """JSON at ``path`` if it exists, else ``compute()`` written there (atomically)."""
    if path.exists():
        return json.loads(path.read_text())
    if CACHED_ONLY:
        return None
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=float))
    tmp.replace(path)
    return value


def mean_of(rows: list[dict], keys=None) -> dict:
    if keys is None:  # every numeric key of any row (a failed row lacks the metrics)
        keys = list(dict.fromkeys(k for r in rows for k, v in r.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)))
    return {k: float(np.nanmean([r[k] for r in rows if r.get(k) is not None])) for k in keys}


def axis_share(normals: np.ndarray, weights: np.ndarray) -> dict:
    """Area share of normals within AXIS_DEG of a coordinate axis (isotropic directions: 3(1 - cos θ))."""
    peak = np.abs(normals).max(axis=1)
    total = weights.sum()
    return {f"axis_share@{d:g}": float(weights[peak >= math.cos(math.radians(d))].sum() / total) for d in AXIS_DEG}


def mesh_axis_share(mesh, rotation: np.ndarray | None = None) -> dict:
    normals = np.asarray(mesh.face_normals)
    if rotation is not None:
        normals = normals @ rotation.T
    return axis_share(normals, np.asarray(mesh.area_faces))


def isotropic_axis_share() -> dict:
    return {f"axis_share@{d:g}": 3 * (1 - math.cos(math.radians(d))) for d in AXIS_DEG}


def rotation_matrix(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    a = math.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k


class Context:
    """What every stage shares: arguments, ids, the VAE (loaded on first use)."""

    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.prepared = Path(args.prepared)
        holdout = [line.strip() for line in (ROOT / args.holdout).read_text().splitlines()
                   if line.strip() and not line.startswith("#")]
        n = args.limit or None
        self.holdout, self.train = holdout[:n], list(args.train_ids)[:n]
        overlap = set(self.holdout) & set(self.train)
        if overlap:
            sys.exit(f"--train-ids overlap the held-out list: {sorted(overlap)}")
        self._vae = None

    def split(self, item_id: str) -> str:
        return "heldout" if item_id in self.holdout else "train"

    @property
    def vae(self):
        if self._vae is None:
            from mar3d.models.io import load_vae

            self._vae = load_vae(Path(self.args.model) / "vae").float().eval().requires_grad_(False)
            trained = set(json.loads((Path(self.args.model) / "vae" / "config.json").read_text()).get("train_ids", []))
            leaked = [i for i in self.holdout if i in trained]
            missing = [i for i in self.train if i not in trained]
            if leaked or missing:
                sys.exit(f"VAE train_ids disagree: held-out ids trained on {leaked}, training ids not trained on {missing}")
        return self._vae


def encode_posterior(vae, shape, tokens: int, seed: int):
    """The posterior (mean and log-variance) of one shape: the pyramid ``encode_shapes`` draws, kept whole."""
    import torch

    from mar3d.data.datasets import draw_pyramid
    from mar3d.data.prepare import item_rng
    from mar3d.models.vae import Posterior

    config = vae.config
    sizes = config.pyramid_sizes() if tokens in config.token_counts else config.level_sizes(tokens)
    levels = draw_pyramid(shape.surface_points, shape.surface_normals, sizes, item_rng(seed, shape.id))
    with torch.no_grad():
        posterior = vae.encode([level[None] for level in levels], tokens)
    return Posterior(posterior.mean.float(), posterior.logvar.float())


def rotated_shape(shape, rotation: np.ndarray):
    """The shape's surface samples in a view frame (p_view = R p), as the MARs' training targets are."""
    from mar3d.pipeline.reconstruct import ShapeSamples

    r = rotation.astype(np.float32)
    return ShapeSamples(shape.id, shape.surface_points @ r.T, shape.surface_normals @ r.T, shape.center, shape.scale)


def logits_function(vae, latents):
    """(Q, 3) numpy points -> (Q,) numpy logits of one shape's latents (1, N, C), in chunks."""
    import torch

    from mar3d.mesh.latents import query_latents

    def at(points: np.ndarray) -> np.ndarray:
        p = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))[None]
        return query_latents(vae, latents, p)[0].numpy()

    return at


def protocol_scores(pred, gt, align="none", seed=0) -> dict:
    from mar3d.evaluation.protocol import evaluate_pair

    return evaluate_pair(pred, gt, align, seed=seed, thresholds=THRESHOLDS).metrics


def keep(metrics: dict) -> dict:
    keys = ["cd"] + [f"{k}@{t:g}" for t in THRESHOLDS for k in ("f_score", "precision", "recall")] + ["nc"]
    return {k: metrics[k] for k in keys if k in metrics}


# ----------------------------------------------------------------------------------------------- Q1 (+Q3)
def vae_item(ctx: Context, item_id: str, tokens: int) -> dict:
    import torch
    import trimesh

    from mar3d.data import layout
    from mar3d.evaluation.vae_reconstruction import normalized_ground_truth, occupancy_ious
    from mar3d.mesh.latents import latents_to_meshes
    from mar3d.pipeline.reconstruct import encode_shapes, samples_from_prepared

    vae, args = ctx.vae, ctx.args
    shape = samples_from_prepared(ctx.prepared, item_id)
    meta = layout.read_meta(ctx.prepared, item_id)
    near = meta["counts"]["occupancy_near_surface"]
    gt = normalized_ground_truth(ctx.prepared, item_id)
    posterior = encode_posterior(vae, shape, tokens, args.seed)
    reference = encode_shapes(vae, [shape], tokens, seed=args.seed)
    assert torch.allclose(reference, posterior.mean, atol=1e-5), "encode_posterior disagrees with encode_shapes"
    std = (0.5 * posterior.logvar).exp()
    kl = 0.5 * (posterior.mean.pow(2) + std.pow(2) - 1 - posterior.logvar)  # (1, N, C)
    kl_per_channel = kl.mean(dim=(0, 1))
    out = {"id": item_id, "split": ctx.split(item_id), "tokens": tokens,
           "posterior": {"std_mean": float(std.mean()), "std_median": float(std.median()),
                         "mean_abs": float(posterior.mean.abs().mean()),
                         "noise_to_signal": float(std.pow(2).mean() / posterior.mean.pow(2).mean()),
                         "kl": float(kl.mean()), "active_channels": int((kl_per_channel > 0.01).sum()),
                         "channels": int(kl.shape[-1])}}
    generator = torch.Generator().manual_seed(args.seed)
    for variant, latents in (("mean", posterior.mean), ("sample", posterior.sample(generator))):
        start = time.perf_counter()
        iou_uniform, iou_near = occupancy_ious(vae, latents, *shape.occupancy, near)
        result = latents_to_meshes(vae, latents, resolution=args.vae_resolution)[0]
        row = {"iou_uniform": iou_uniform, "iou_near": iou_near, "status": result.status,
               "queries": result.queries, "decode_seconds": result.decode_seconds}
        if result.status == "ok":
            mesh = result.mesh
            row.update(keep(protocol_scores(mesh, gt, seed=args.seed)))
            if variant == "mean":
                smooth = mesh.copy()
                trimesh.smoothing.filter_taubin(smooth, iterations=10)
                row["smoothed"] = keep(protocol_scores(smooth, gt, seed=args.seed))
                row["faces"] = len(mesh.faces)
        row["seconds"] = time.perf_counter() - start
        out[variant] = row
    return out


def stage_vae(ctx: Context) -> dict:
    rows = []
    for tokens in ctx.args.tokens:
        for item_id in ctx.holdout + ctx.train:
            path = ctx.out / "cache" / "vae" / f"{item_id}_{tokens}_r{ctx.args.vae_resolution}.json"
            if not path.exists():
                log(f"vae: {item_id} {tokens} tokens")
            row = cached(path, lambda: vae_item(ctx, item_id, tokens))
            if row is not None:
                rows.append(row)
    table = {}
    for tokens in ctx.args.tokens:
        for split in ("heldout", "train"):
            part = [r for r in rows if r["tokens"] == tokens and r["split"] == split]
            if not part:
                continue
            entry = {"objects": len(part), "posterior": mean_of([r["posterior"] for r in part])}
            for variant in ("mean", "sample"):
                scored = [r[variant] for r in part]
                entry[variant] = mean_of(scored)
                entry[variant]["failed"] = sum(r["status"] != "ok" for r in scored)
            entry["mean_smoothed"] = mean_of([r["mean"]["smoothed"] for r in part if "smoothed" in r["mean"]])
            table[f"{split}_{tokens}"] = entry
    return {"per_object": rows, "summary": table}


# ----------------------------------------------------------------------------------------------- Q2
def run_command(command: list[str], env) -> int:
    log("$", " ".join(command))
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def stage_generate(ctx: Context) -> dict:
    from PIL import Image

    args = ctx.args
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    mar3d = str(Path(sys.executable).parent / "mar3d")
    base = ctx.out / "generate"
    inputs_same = {}
    for split, ids in (("heldout", ctx.holdout), ("train", ctx.train)):
        folder = base / "inputs" / split
        folder.mkdir(parents=True, exist_ok=True)
        for item_id in ids:
            view0 = ctx.prepared / item_id / "views" / "000.png"
            target = folder / f"{item_id}.png"
            example = ROOT / "examples" / f"{item_id}.png"
            if split == "heldout" and example.exists():
                # The bundled examples are view 0 of the held-out objects: check it is the same image.
                inputs_same[item_id] = bool(np.array_equal(np.asarray(Image.open(example)), np.asarray(Image.open(view0))))
                source = example
            else:
                source = view0
            if not target.exists():
                shutil.copyfile(source, target)
    results = {"inputs_identical_to_prepared_view0": inputs_same, "settings": {
        "resolution": args.gen_resolution, "dtype": args.gen_dtype, "seed": args.seed}}
    for variant in args.gen_variants:
        for split in ("heldout", "train"):
            run_dir = base / f"{variant}_r{args.gen_resolution}" / split
            metrics_file = run_dir / "metrics" / "metrics.json"
            ids = ctx.holdout if split == "heldout" else ctx.train
            if not (metrics_file.exists() and {o["id"] for o in json.loads(metrics_file.read_text())["objects"]} >= set(ids)):
                start = time.perf_counter()
                command = [mar3d, "generate", str(base / "inputs" / split), "--model", args.model,
                           "--out", str(run_dir / "meshes"), "--seed", str(args.seed), "--no-progress",
                           "--dtype", args.gen_dtype, "--resolution", str(args.gen_resolution)]
                if variant == "lr_only":
                    command.append("--no-hr")
                else:
                    command.append("--hr")
                run_command(command, env)
                seconds = time.perf_counter() - start
                run_command([mar3d, "evaluate", "--pred", str(run_dir / "meshes"), "--gt", str(ctx.prepared),
                             "--views", str(ctx.prepared), "--view", "0", "--out", str(run_dir / "metrics"),
                             "--render-resolution", "0", "--seed", str(args.seed)], env)
                (run_dir / "generate_seconds.json").write_text(json.dumps({"seconds": seconds, "images": len(ids)}))
            document = json.loads(metrics_file.read_text())
            objects = [o for o in document["objects"] if o["id"] in ids]
            timing = run_dir / "generate_seconds.json"
            results[f"{variant}_{split}"] = {
                "objects": len(objects), "failed": sum(o["status"] != "ok" for o in objects),
                "mean": mean_of([keep(o["metrics"]) for o in objects if o["status"] == "ok"]),
                "per_object": {o["id"]: keep(o["metrics"]) for o in objects if o["status"] == "ok"},
                "seconds_per_image": (json.loads(timing.read_text())["seconds"] / len(ids)) if timing.exists() else None}
    return results


# ----------------------------------------------------------------------------------------------- Q3
def thickness(ctx: Context, item_id: str) -> dict:
    """How thin the object is: extents, 3V/A (volume from the stored uniform occupancy labels), both in the
    evaluation frame (longest side 2)."""
    from mar3d.data import layout
    from mar3d.evaluation.vae_reconstruction import normalized_ground_truth

    gt = normalized_ground_truth(ctx.prepared, item_id)
    extents = np.sort(gt.extents)[::-1]
    samples = layout.read_samples(ctx.prepared, item_id)
    near = layout.read_meta(ctx.prepared, item_id)["counts"]["occupancy_near_surface"]
    volume = float(samples["occ_labels"][near:].mean()) * (2 * 1.05) ** 3
    to_eval = 2.0 / extents[0]
    return {"extent_ratio_min_max": float(extents[2] / extents[0]), "extent_ratio_mid_max": float(extents[1] / extents[0]),
            "thickness_3v_over_a": float(3 * volume / gt.area * to_eval)}


def ellipsoid_like(mesh):
    """A sphere stretched onto ``mesh``'s bounding box: a shape-free guess with the exact extents."""
    import trimesh

    sphere = trimesh.creation.icosphere(4)
    lo, hi = mesh.bounds
    sphere.vertices = sphere.vertices * (hi - lo) / 2 + (lo + hi) / 2
    return sphere


def shape_item(ctx: Context, run_dir: Path, item_id: str) -> dict:
    import trimesh

    aligned = run_dir / "metrics" / "aligned"
    pred = trimesh.load(aligned / f"{item_id}.pred.glb", force="mesh")
    gt = trimesh.load(aligned / f"{item_id}.gt.glb", force="mesh")  # both in the prediction's normalized frame
    seed = ctx.args.seed
    pe, ge = pred.extents, gt.extents
    fixed = pred.copy()  # the prediction stretched per axis onto the ground truth's box
    lo, hi = pred.bounds
    glo, ghi = gt.bounds
    fixed.vertices = (fixed.vertices - (lo + hi) / 2) * (ghi - glo) / (hi - lo) + (glo + ghi) / 2
    sphere = trimesh.creation.icosphere(4)  # the protocol normalizes it onto the prediction's frame
    row = {"id": item_id, "split": ctx.split(item_id),
           "pred_extents": pe.tolist(), "gt_extents": ge.tolist(),
           "extent_ratio_pred_over_gt": (pe / ge).tolist(),
           "max_axis_log_ratio": float(np.abs(np.log(pe / ge)).max()),
           "pred_aspect_min_max": float(pe.min() / pe.max()), "gt_aspect_min_max": float(ge.min() / ge.max()),
           "raw": keep(protocol_scores(pred, gt, seed=seed)),
           "bbox_fixed": keep(protocol_scores(fixed, gt, seed=seed)),
           "ellipsoid_gt_box": keep(protocol_scores(ellipsoid_like(gt), gt, seed=seed)),
           "sphere": keep(protocol_scores(sphere, gt, seed=seed)),
           "pred_axis": mesh_axis_share(pred), "gt_axis": mesh_axis_share(gt)}
    row.update(thickness(ctx, item_id))
    return row


def stage_shape(ctx: Context, vae_rows: list[dict] | None) -> dict:
    from scipy.stats import spearmanr

    args = ctx.args
    variant = args.gen_variants[0]
    run_base = ctx.out / "generate" / f"{variant}_r{args.gen_resolution}"
    rows = []
    for item_id in ctx.holdout + ctx.train:
        run_dir = run_base / ctx.split(item_id)
        if not (run_dir / "metrics" / "aligned" / f"{item_id}.pred.glb").exists():
            log(f"shape: no generated mesh for {item_id} (run the generate stage); skipped")
            continue
        path = ctx.out / "cache" / "shape" / f"{variant}_r{args.gen_resolution}_{item_id}.json"
        row = cached(path, lambda: shape_item(ctx, run_dir, item_id))
        if row is not None:
            rows.append(row)
    summary = {}
    for split in ("heldout", "train", "all"):
        part = [r for r in rows if split == "all" or r["split"] == split]
        if not part:
            continue
        entry = {"objects": len(part)}
        for key in ("raw", "bbox_fixed", "ellipsoid_gt_box", "sphere", "pred_axis", "gt_axis"):
            entry[key] = mean_of([r[key] for r in part])
        entry["max_axis_log_ratio"] = float(np.mean([r["max_axis_log_ratio"] for r in part]))
        entry["median_max_axis_ratio"] = float(np.exp(np.median([r["max_axis_log_ratio"] for r in part])))
        entry["pred_aspect_min_max"] = float(np.mean([r["pred_aspect_min_max"] for r in part]))
        entry["gt_aspect_min_max"] = float(np.mean([r["gt_aspect_min_max"] for r in part]))
        if len(part) >= 5:
            for measure in ("extent_ratio_min_max", "thickness_3v_over_a"):
                rho, p = spearmanr([r[measure] for r in part], [r["raw"]["f_score@0.1"] for r in part])
                entry[f"spearman_gen_f0.1_vs_{measure}"] = {"rho": float(rho), "p": float(p)}
        summary[split] = entry
    # The VAE ceiling per object against thickness (Q3, thin objects), from the vae stage.
    if vae_rows:
        thick = {i: thickness(ctx, i) for i in dict.fromkeys(r["id"] for r in vae_rows)}
        for tokens in sorted({r["tokens"] for r in vae_rows}):
            part = [r for r in vae_rows if r["tokens"] == tokens and r["mean"].get("f_score@0.1") is not None]
            for measure in ("extent_ratio_min_max", "thickness_3v_over_a"):
                rho, p = spearmanr([thick[r["id"]][measure] for r in part], [r["mean"]["f_score@0.1"] for r in part])
                summary.setdefault("vae", {})[f"spearman_vae{tokens}_f0.1_vs_{measure}"] = {"rho": float(rho), "p": float(p)}
        summary["thickness"] = thick
    return {"variant": f"{variant}_r{args.gen_resolution}", "per_object": rows, "summary": summary}


# ----------------------------------------------------------------------------------------------- Q4
def octave_weights(vae) -> dict:
    """RMS weight of the decoder's query embedding on each Fourier octave (sin and cos, three axes)."""
    w = vae.query_embed.weight.detach().float()  # (D, 3 + 6 * octaves): xyz, sin(axis, k), cos(axis, k)
    octaves = vae.config.fourier_octaves
    out = {"xyz": float(w[:, :3].pow(2).mean().sqrt())}
    for k in range(octaves):
        cols = [3 + a * octaves + k for a in range(3)] + [3 + 3 * octaves + a * octaves + k for a in range(3)]
        out[f"octave{k}"] = float(w[:, cols].pow(2).mean().sqrt())
    return out


def fourier_facts(vae, resolutions) -> dict:
    """The Fourier features' frequencies against the grid spacings (cycles per unit of the decoding box)."""
    from mar3d.data.normalize import DECODE_BOX

    octaves = vae.config.fourier_octaves
    highest = 2 ** (octaves - 1) / 2  # sin(2^k pi x): 2^(k-1) cycles per unit
    facts = {"octaves": octaves, "highest_frequency_cycles_per_unit": highest,
             "highest_period_units": 1 / highest}
    for r in resolutions:
        spacing = 2 * DECODE_BOX / r
        nyquist = 1 / (2 * spacing)
        alias = abs(highest - round(highest * spacing) / spacing)
        # A ripple near a multiple of the Nyquist frequency shows on the grid as a slow beat (stripes).
        beat = min(abs(highest - m * nyquist) for m in range(1, 8))
        facts[f"grid{r}"] = {"spacing": spacing, "nyquist_cycles_per_unit": nyquist,
                             "highest_octave_above_nyquist": bool(highest > nyquist),
                             "alias_frequency": alias, "alias_period_units": (1 / alias) if alias > 0 else None,
                             "alias_period_cells": (1 / alias / spacing) if alias > 0 else None,
                             "beat_with_nyquist_multiple": beat, "beat_period_units": 1 / beat,
                             "beat_period_cells": 1 / beat / spacing}
    return facts


def surface_profile(logits_at, base: np.ndarray, height: np.ndarray, box: float = 1.05, coarse: int = 256,
                    iterations: int = 30):
    """First crossing (outside -> inside) coming from +height along each line base + t * height.

    Returns t* per line (NaN where none): the surface height, found by bisection to ~2e-9 units.
    """
    t = np.linspace(box, -box, coarse)
    values = logits_at((base[:, None, :] + t[None, :, None] * height).reshape(-1, 3)).reshape(len(base), coarse)
    inside = values >= 0
    first = inside.argmax(axis=1)
    found = inside.any(axis=1) & (first > 0)
    first = np.where(found, first, 1)
    outside_t, inside_t = t[first - 1].copy(), t[first].copy()
    for _ in range(iterations):
        mid = (outside_t + inside_t) / 2
        now = logits_at(base + mid[:, None] * height) >= 0
        inside_t = np.where(now, mid, inside_t)
        outside_t = np.where(now, outside_t, mid)
    return np.where(found, (outside_t + inside_t) / 2, np.nan)


def profile_spectrum(s: np.ndarray, z: np.ndarray, candidates: dict) -> dict | None:
    """High-pass residual of a height profile z(s): RMS, slope RMS, spectrum peaks, power at candidates."""
    from scipy.ndimage import gaussian_filter1d

    spacing = s[1] - s[0]
    ok = np.isfinite(z)
    jumps = np.abs(np.diff(z)) > 0.01  # > 20x the spacing: another part of the surface
    # The longest run of lines on one smooth piece of surface.
    breaks = np.flatnonzero(~ok[:-1] | ~ok[1:] | jumps)
    edges = np.concatenate([[-1], breaks, [len(z) - 1]])
    lengths = np.diff(edges)
    k = lengths.argmax()
    start, stop = edges[k] + 1, edges[k + 1] + 1
    if stop - start < 256:
        return None
    seg = z[start:stop]
    residual = seg - gaussian_filter1d(seg, 0.03 / spacing, mode="nearest")  # keeps periods < ~0.1
    cut = int(0.06 / spacing)  # drop the filter's edge effects
    residual = residual[cut:-cut] if len(residual) > 2 * cut + 64 else residual
    n = len(residual)
    window = np.hanning(n)
    nfft = 8 * 2 ** int(np.ceil(np.log2(n)))
    power = np.abs(np.fft.rfft(residual * window, nfft)) ** 2
    freq = np.fft.rfftfreq(nfft, spacing)
    band = (freq >= 8) & (freq <= 200)
    order = np.argsort(power[band])[::-1]
    peaks = []
    for i in order:  # the 3 strongest distinct peaks in 8-200 cycles per unit
        f = float(freq[band][i])
        if all(abs(f - p) > 3 for p in peaks):
            peaks.append(f)
        if len(peaks) == 3:
            break
    ratios = {}
    for name, fc in candidates.items():
        near = (freq > fc - 1.5) & (freq < fc + 1.5)
        around = (freq > 0.7 * fc) & (freq < 1.3 * fc) & ~((freq > fc - 4) & (freq < fc + 4))
        ratios[name] = float(power[near].max() / np.median(power[around]))
    slope = np.gradient(residual, spacing)
    return {"lines_used": int(n), "residual_rms": float(residual.std()),
            "slope_rms_deg": float(np.degrees(np.arctan(np.sqrt(np.mean(slope ** 2))))),
            "peaks_cycles_per_unit": peaks, "peak_to_background": ratios}


def marching_error(logits_at, base: np.ndarray, height_axis: int, z: np.ndarray, resolution: int,
                   box: float = 1.05) -> dict:
    """Where marching cubes would put the surface along each line (linear zero of the two grid corners
    around the true crossing) minus the true crossing, in cells. A linear field gives 0; a step gives up
    to half a cell: the stair steps marching cubes adds to a non-linear logit profile."""
    spacing = 2 * box / resolution
    ok = np.isfinite(z)
    zz = z[ok]
    i0 = np.floor((zz + box) / spacing)
    lo, hi = -box + i0 * spacing, -box + (i0 + 1) * spacing
    e = np.zeros(3)
    e[height_axis] = 1
    b = base[ok]
    b_lo, b_hi = b.copy(), b.copy()
    b_lo[:, height_axis], b_hi[:, height_axis] = lo, hi
    v_lo, v_hi = logits_at(b_lo), logits_at(b_hi)
    bracket = (v_lo >= 0) != (v_hi >= 0)
    z_lin = lo + spacing * v_lo / (v_lo - v_hi)
    error = (z_lin - zz)[bracket] / spacing
    slope = np.abs(v_hi - v_lo)[bracket] / spacing
    return {"resolution": resolution, "lines": int(bracket.sum()), "unbracketed": int((~bracket).sum()),
            "rms_error_cells": float(np.sqrt(np.mean(error ** 2))), "max_error_cells": float(np.abs(error).max()),
            "median_logit_slope_per_unit": float(np.median(slope))}


def stripes_item(ctx: Context, item_id: str, tokens: int) -> dict:
    import torch

    from mar3d.data import layout
    from mar3d.evaluation.metrics import point_metrics, sample_points
    from mar3d.evaluation.vae_reconstruction import normalized_ground_truth
    from mar3d.mesh.grid import decode_grid
    from mar3d.mesh.latents import latents_to_meshes
    from mar3d.mesh.marching import grid_to_mesh
    from mar3d.pipeline.reconstruct import encode_shapes, samples_from_prepared

    vae, args = ctx.vae, ctx.args
    rotation = layout.read_views(ctx.prepared, item_id)[0]["rotation"]
    shape = rotated_shape(samples_from_prepared(ctx.prepared, item_id), rotation)  # view frame (MAR targets)
    gt = normalized_ground_truth(ctx.prepared, item_id)
    gt.vertices = gt.vertices @ rotation.T
    latents = encode_shapes(vae, [shape], tokens, seed=args.seed)
    logits_at = logits_function(vae, latents)
    with torch.no_grad():
        cache = vae.prepare_decoder(latents)

    def logits_fn(points):
        with torch.no_grad():
            return vae.query(cache, points).float()

    out = {"id": item_id, "tokens": tokens}
    # (a) dense vs hierarchical, same latents, same grid.
    r = args.dense_resolution
    dense = decode_grid(logits_fn, 1, r, "dense")
    hier = decode_grid(logits_fn, 1, r, "hierarchical")
    vd, vh = dense.values[0], hier.values[0]
    mesh_d, _ = grid_to_mesh(vd, dense.box)
    mesh_h, _ = grid_to_mesh(vh, hier.box)
    cell = 2 * dense.box / r
    between = point_metrics(sample_points(mesh_d, 100_000, args.seed), sample_points(mesh_h, 100_000, args.seed + 1),
                            thresholds=(cell / 2, cell / 8))
    # The sampling floor: the dense mesh against another sampling of itself.
    floor = point_metrics(sample_points(mesh_d, 100_000, args.seed), sample_points(mesh_d, 100_000, args.seed + 1),
                          thresholds=(cell / 2, cell / 8))
    out["dense_vs_hierarchical"] = {
        "resolution": r, "corners": int(vd.numel()), "sign_differences": int(((vd > 0) != (vh > 0)).sum()),
        "queries_dense": dense.queries[0], "queries_hierarchical": hier.queries[0],
        "seconds_dense": dense.seconds, "seconds_hierarchical": hier.seconds,
        "faces_dense": len(mesh_d.faces), "faces_hierarchical": len(mesh_h.faces),
        "mesh_cd": between["cd"], "mesh_cd_sampling_floor": floor["cd"],
        "mesh_f@half_cell": between[f"f_score@{cell / 2:g}"], "mesh_f@half_cell_floor": floor[f"f_score@{cell / 2:g}"],
        "vertices_identical": bool(len(mesh_d.vertices) == len(mesh_h.vertices)
                                   and np.allclose(np.sort(mesh_d.vertices, axis=0), np.sort(mesh_h.vertices, axis=0)))}
    del dense, hier, vd, vh
    # (b) off-grid: surface height profiles along lines (visible front, height along +z of the view frame).
    lo, hi = gt.bounds
    center = (lo + hi) / 2
    profiles = {}
    lines = args.profile_lines
    for name, tangent in (("x", [1, 0, 0]), ("y", [0, 1, 0]), ("xy_diagonal", [1, 1, 0])):
        tangent = np.asarray(tangent, dtype=np.float64)
        tangent /= np.linalg.norm(tangent)
        half = 0.35 * float(np.abs(gt.extents @ np.abs(tangent)).max()) if name != "xy_diagonal" else \
            0.35 * float(min(gt.extents[0], gt.extents[1]))
        s = np.linspace(-half, half, lines)
        base = center[None, :] + s[:, None] * tangent
        base[:, 2] = 0.0
        z = surface_profile(logits_at, base, np.array([0.0, 0.0, 1.0]))
        # Ripples of sin(2^k pi x) along the axes appear at 2^(k-1) |t_axis| cycles per unit of the profile.
        factor = float(np.abs(tangent).max())
        candidates = {f"octave{k}": 2 ** (k - 1) * factor for k in (5, 6, 7)}
        spectrum = profile_spectrum(s, z, candidates)
        entry = {"length_units": 2 * half, "lines": lines, "found": int(np.isfinite(z).sum()),
                 "spectrum": spectrum, "candidates": candidates}
        for res in (128, args.stripe_resolution):
            entry[f"marching_error_r{res}"] = marching_error(logits_at, base, 2, z, res)
        profiles[name] = entry
    out["profiles"] = profiles
    # (c) meshes decoded on the field's grid and on a rotated grid: whose axes do the normals follow?
    q = rotation_matrix([1.0, 2.0, 3.0], 37.0)  # grid frame -> field frame: p_field = Q p_grid
    qt = torch.from_numpy(q.astype(np.float32))

    def rotated_fn(points):
        return logits_fn(points @ qt.T)

    res = args.stripe_resolution
    plain = latents_to_meshes(vae, latents, resolution=res)[0].mesh
    from mar3d.mesh.extract import extract_meshes

    turned = extract_meshes(rotated_fn, 1, resolution=res)[0].mesh  # in the grid frame
    coarse = latents_to_meshes(vae, latents, resolution=128)[0].mesh
    out["normals"] = {
        "isotropic": isotropic_axis_share(),
        "gt_field_frame": mesh_axis_share(gt), "gt_in_rotated_grid_frame": mesh_axis_share(gt, q.T),
        f"recon_r{res}_field_grid": mesh_axis_share(plain),
        f"recon_r{res}_rotated_grid_in_grid_frame": mesh_axis_share(turned),
        f"recon_r{res}_rotated_grid_in_field_frame": mesh_axis_share(turned, q),
        "recon_r128_field_grid": mesh_axis_share(coarse)}
    return out


def stage_stripes(ctx: Context, generate: dict | None) -> dict:
    import trimesh

    args = ctx.args
    vae = ctx.vae
    tokens = max(args.tokens)
    ids = list(args.stripe_ids)[:args.limit or None]
    rows = []
    for item_id in ids:
        path = ctx.out / "cache" / "stripes" / f"{item_id}_{tokens}_r{args.stripe_resolution}.json"
        if not path.exists():
            log(f"stripes: {item_id}")
        row = cached(path, lambda: stripes_item(ctx, item_id, tokens))
        if row is not None:
            rows.append(row)
    out = {"octave_weight_rms": octave_weights(vae),
           "fourier": fourier_facts(vae, sorted({128, 192, 256, 512, args.dense_resolution, args.gen_resolution})),
           "per_object": rows}
    # Axis-aligned normals of the generated meshes (view frame) against their ground truth there.
    variant = args.gen_variants[0]
    run_base = ctx.out / "generate" / f"{variant}_r{args.gen_resolution}"
    shares = {}
    for split, ids in (("heldout", ctx.holdout), ("train", ctx.train)):
        aligned = run_base / split / "metrics" / "aligned"
        pred = [mesh_axis_share(trimesh.load(aligned / f"{i}.pred.glb", force="mesh"))
                for i in ids if (aligned / f"{i}.pred.glb").exists()]
        gt = [mesh_axis_share(trimesh.load(aligned / f"{i}.gt.glb", force="mesh"))
              for i in ids if (aligned / f"{i}.gt.glb").exists()]
        if pred:
            shares[split] = {"objects": len(pred), "generated": mean_of(pred), "ground_truth": mean_of(gt)}
    out["generated_normals"] = shares
    return out


# ----------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    global CACHED_ONLY
    args = parse_args(argv)
    CACHED_ONLY = args.cached_only
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    os.chdir(ROOT)
    ctx = Context(args)
    if not ctx.prepared.is_dir():
        sys.exit(f"{ctx.prepared}: not prepared; run `.venv/bin/mar3d prepare ../shared/data/ycb --out "
                 f"{ctx.prepared} --up-axis z --workers 2` first")
    ctx.out.mkdir(parents=True, exist_ok=True)
    result_file = ctx.out / "diagnose.json"
    results = json.loads(result_file.read_text()) if result_file.exists() else {}
    results["settings"] = {k: v for k, v in vars(args).items()}
    results["settings"].update(holdout_ids=ctx.holdout, train_ids=ctx.train)
    for stage in STAGES:
        if stage not in args.stages:
            continue
        start = time.perf_counter()
        log(f"== stage {stage}")
        if stage == "vae":
            results["vae"] = stage_vae(ctx)
        elif stage == "generate":
            results["generate"] = stage_generate(ctx)
        elif stage == "shape":
            results["shape"] = stage_shape(ctx, results.get("vae", {}).get("per_object"))
        elif stage == "stripes":
            results["stripes"] = stage_stripes(ctx, results.get("generate"))
        results.setdefault("seconds", {})[stage] = time.perf_counter() - start
        # Merge into the file as it is now: another run of this script may have written other stages.
        current = json.loads(result_file.read_text()) if result_file.exists() else {}
        current.setdefault("seconds", {})[stage] = results["seconds"][stage]
        current[stage] = results[stage]
        current.setdefault("settings_by_stage", {})[stage] = results["settings"]
        results = {**current, "settings": results["settings"]}
        tmp = result_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(current, indent=1, default=float))
        tmp.replace(result_file)
        log(f"== stage {stage} done in {time.perf_counter() - start:.0f} s -> {result_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
