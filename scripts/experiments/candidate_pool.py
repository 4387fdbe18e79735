"""Experiment (docs/results.md, "Session 20 experiments"): how much choosing among MAR-LR candidates could still
gain, and whether any signal the pipeline has at inference finds the better ones.

For each held-out example and sampling seed, MAR-LR samples K candidates in one batch (as ``mar3d generate
--candidates K`` does); every candidate is then made into a final mesh exactly as if it had been kept (carved and
filled by the input's outline, 128³) and scored against the ground truth (docs/protocol.md, known camera, view 0).
Per candidate it also records what a selector could use: the outline IoU (today's selection), the share of the
outline filled, the conditional and unconditional diffusion losses of its tokens under MAR-LR (same masks, times
and noise for every candidate), and the pairwise F@0.1 / CD between candidates (for consensus selection) on three
meshes: the coarse 32³ selection mesh, the same carved and filled, and the final mesh.

usage (repo root): .venv/bin/python scripts/experiments/candidate_pool.py OUT [--candidates 8] [--seeds 0,1,2]
           [--part 0 --parts 2] [--model DIR]   (--part/--parts split the examples between processes)
then:      .venv/bin/python scripts/experiments/candidate_pool.py OUT --analyze [--pool 4]
Writes OUT/records<part>.jsonl, one line per (example, seed); finished lines are kept (rerun to resume).
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mar3d.data import layout
from mar3d.data.mesh_io import load_mesh
from mar3d.evaluation.batch import find_ground_truth, view_rotation
from mar3d.evaluation.metrics import SurfaceSamples, normalized, point_metrics, sample_points
from mar3d.evaluation.protocol import evaluate_pair
from mar3d.pipeline.pipeline import MAR3DPipeline
from mar3d.utils.precision import autocast_for

GROUND_TRUTH = "runs/prepared/ycb"
MASK_RATIOS = (1.0, 0.9, 0.8, 0.7)


@functools.lru_cache(maxsize=None)
def ground_truth_in_view(item: str) -> tuple:
    """The ground-truth mesh of a held-out item and the rotation R of its view 0 (ground truth -> view frame)."""
    mesh = load_mesh(find_ground_truth(GROUND_TRUTH)[item].path).geometry
    return mesh, view_rotation(layout.item_dir(GROUND_TRUTH, item) / layout.VIEWS_JSON, 0)


@torch.no_grad()
def diffusion_losses(pipe: MAR3DPipeline, image: torch.Tensor, latents: torch.Tensor, seed: int,
                     repeats: int = 4, per_token: int = 8) -> dict[str, dict[str, list[float]]]:
    """Mean ε-MSE over the masked tokens of each candidate (K, N, C), with the image ("c") and with the null
    condition ("u"), per mask ratio: the same orders, timesteps and noise for every candidate and both."""
    mar, generator = pipe.mar_lr, torch.Generator().manual_seed(1000 + seed)
    k, diffusion = latents.shape[0], pipe.mar_lr.diffusion_head.diffusion
    x = latents * mar.config.latent_scale
    out: dict[str, dict[str, list[float]]] = {"c": {}, "u": {}}
    with autocast_for(torch.device("cpu"), pipe.mar_dtype):
        buffers = {"c": mar.condition_buffer(image[None].expand(k, -1, -1, -1))}
        buffers["u"] = mar.null_buffer(k).to(buffers["c"].dtype)
        for ratio in MASK_RATIOS:
            sums = {key: torch.zeros(k) for key in buffers}
            for _ in range(repeats):
                mask = mar.random_masking(mar.sample_orders(1, "cpu", generator).expand(k, -1), ratio)
                n = int(mask[0].sum())
                t = torch.randint(0, diffusion.num_steps, (n * per_token,), generator=generator).repeat(k)
                noise = torch.randn(n * per_token, x.shape[-1], generator=generator).repeat(k, 1)
                x0 = x[mask].view(k, n, -1).repeat(1, per_token, 1).reshape(-1, x.shape[-1])
                noisy = diffusion.q_sample(x0, t, noise)
                for key, buffer in buffers.items():
                    z = mar.forward_mae(x, mask, buffer)
                    z = z[mask].view(k, n, -1).repeat(1, per_token, 1).reshape(-1, z.shape[-1])
                    error = (mar.diffusion_head(noisy, t, z).float() - noise).pow(2).mean(-1)
                    sums[key] += error.view(k, -1).mean(-1) / repeats
            for key in buffers:
                out[key][str(ratio)] = sums[key].tolist()
    return out


def surface(mesh) -> SurfaceSamples | None:
    """20k samples of the mesh in the evaluation's normalization, or None for an empty mesh."""
    return sample_points(normalized(mesh), 20_000, 7) if len(mesh.faces) else None


def pairwise(samples: list[SurfaceSamples | None]) -> list:
    """(K, K, 2) F@0.1 and CD between every two candidates' samples (0 and 0 on the diagonal or if empty)."""
    k = len(samples)
    table = np.zeros((k, k, 2))
    for i in range(k):
        for j in range(k):
            if i != j and samples[i] is not None and samples[j] is not None:
                metrics = point_metrics(samples[i], samples[j])
                table[i, j] = metrics["f_score@0.1"], metrics["cd"]
    return table.tolist()


def collect(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    pipe = MAR3DPipeline.from_pretrained(args.model)
    settings = pipe.settings()
    coarse_settings = replace(settings, resolution=32, faces=0)
    args.out.mkdir(parents=True, exist_ok=True)
    records = args.out / f"records{args.part}.jsonl"
    lines = records.read_text().splitlines() if records.exists() else []
    done = {(r["id"], r["seed"]) for r in map(json.loads, lines)}
    for index, image in enumerate(sorted(Path("examples").glob("*.png"))):
        if index % args.parts != args.part:
            continue
        item = image.stem
        gt, rotation = ground_truth_in_view(item)
        condition = pipe.preprocess(image)
        for seed in args.seeds:
            if (item, seed) in done:
                continue
            start, timings = time.time(), {}
            generator = torch.Generator().manual_seed(seed)
            lr = pipe.sample_stage("lr", condition, generator, settings, timings, copies=args.candidates)
            meshes = pipe.coarse_meshes(lr)
            fits = pipe.outline_fits(meshes, condition)
            candidates, samples = [], {"coarse": [], "coarse_carved": [], "final": []}
            for k in range(args.candidates):
                carve, _, filled = pipe.carver(lr[k:k + 1], condition, timings, (fits[k], meshes[k]), True)
                mesh = pipe.extract(lr[k:k + 1], settings, timings, carve)[0]
                coarse_carved = pipe.extract(lr[k:k + 1], coarse_settings, timings, carve)[0]
                for key, m in (("coarse", meshes[k]), ("coarse_carved", coarse_carved), ("final", mesh)):
                    samples[key].append(surface(m))
                extent = np.ptp(meshes[k].vertices, axis=0).tolist() if len(meshes[k].vertices) else [0.0] * 3
                candidates.append({"iou": fits[k].iou, "filled": filled, "coarse_extent": extent,
                                   "metrics": evaluate_pair(mesh, gt, rotation).metrics})
            record = {"id": item, "seed": seed, "cands": candidates,
                      "diff": diffusion_losses(pipe, condition.image, lr, seed),
                      "pair": {key: pairwise(s) for key, s in samples.items()}, "seconds": time.time() - start}
            with records.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(item, seed, f"{record['seconds']:.0f} s",
                  " ".join(f"{c['metrics']['f_score@0.1']:.3f}" for c in candidates), flush=True)


def ranks(values: np.ndarray) -> np.ndarray:
    """0 for the highest value."""
    return np.argsort(np.argsort(-values))


def analyze(args: argparse.Namespace) -> None:
    """Mean F@0.1 of the candidate each selector keeps, over pools of ``--pool`` candidates, and each selector
    minus the outline-IoU selection (mean ± standard error over pools)."""
    records = [json.loads(line) for f in sorted(args.out.glob("records*.jsonl")) for line in f.read_text().splitlines()]
    kept: dict[str, list[float]] = {}
    for record in records:
        count = len(record["cands"])
        for start in range(0, count - args.pool + 1, args.pool):
            ks = list(range(start, start + args.pool))
            f = np.array([record["cands"][k]["metrics"]["f_score@0.1"] for k in ks])
            iou = np.array([record["cands"][k]["iou"] for k in ks])
            filled = np.array([record["cands"][k]["filled"] for k in ks])
            choices = {"first (one candidate)": 0, "outline IoU (shipped)": iou.argmax(), "oracle": f.argmax(),
                       "least filled": filled.argmin(), "IoU − filled": (iou - filled).argmax()}
            if record.get("diff"):
                c = {q: np.array(record["diff"]["c"][q])[ks] for q in record["diff"]["c"]}
                u = {q: np.array(record["diff"]["u"][q])[ks] for q in record["diff"]["u"]}
                c_all, u_all = sum(c.values()), sum(u.values())
                choices.update({"lowest loss, all masked": c["1.0"].argmin(), "lowest loss, all ratios": c_all.argmin(),
                                "classifier (u − c), all masked": (u["1.0"] - c["1.0"]).argmax(),
                                "classifier (u − c), all ratios": (u_all - c_all).argmax(),
                                "ranks: IoU + classifier":
                                    (ranks(iou) + ranks(u_all - c_all) + 1e-3 * ranks(iou)).argmin()})
            for key in record.get("pair", {}):
                table = np.array(record["pair"][key])[np.ix_(ks, ks)]
                agreement = table[..., 0].sum(1) / (args.pool - 1)
                choices[f"consensus F@0.1, {key}"] = agreement.argmax()
                choices[f"ranks: IoU + consensus, {key}"] = (ranks(iou) + ranks(agreement) + 1e-3 * ranks(iou)).argmin()
            for name, pick in choices.items():
                kept.setdefault(name, []).append(f[int(pick)])
    base = np.array(kept["outline IoU (shipped)"])
    print(f"{len(records)} (example, seed) records, objects {sorted({r['id'] for r in records})}, "
          f"pools of {args.pool}: {len(base)}")
    for name, values in kept.items():
        d = np.array(values) - base
        print(f"{name:40s} F@0.1 {np.mean(values):.3f}   − IoU {d.mean():+.3f} ± {d.std() / np.sqrt(len(d)):.3f}")
    depth_report(records, args.pool)


def depth_report(records: list[dict], pool: int) -> None:
    """How far the candidates' depth-to-height ratios (coarse 32³ mesh, uncarved, view frame: z over y) are from
    the ground truth's: the kept (outline IoU) one's and the pool median's, and how that error relates to F@0.1."""
    truth = {}
    for item in sorted({r["id"] for r in records}):
        mesh, rotation = ground_truth_in_view(item)
        extent = np.ptp(mesh.vertices @ rotation.T, axis=0)
        truth[item] = np.log(extent[2] / extent[1])
    rows, correlations = [], []
    for record in records:
        for start in range(0, len(record["cands"]) - pool + 1, pool):
            cands = record["cands"][start:start + pool]
            ratio = np.log([c["coarse_extent"][2] / max(c["coarse_extent"][1], 1e-9) for c in cands])
            f = np.array([c["metrics"]["f_score@0.1"] for c in cands])
            kept = int(np.argmax([c["iou"] for c in cands]))
            rows.append((record["id"], ratio[kept], np.median(ratio)))
            if f.std() > 0 and ratio.std() > 0:
                correlations.append(np.corrcoef(-np.abs(ratio - truth[record["id"]]), f)[0, 1])
    print(f"depth/height: mean |log error| kept {np.mean([abs(k - truth[i]) for i, k, _ in rows]):.3f}, "
          f"pool median {np.mean([abs(m - truth[i]) for i, _, m in rows]):.3f}; "
          f"correlation of −|log error| with F@0.1 within a pool (mean) {np.mean(correlations):.2f}")
    for item in truth:
        kept = np.mean([k for i, k, _ in rows if i == item])
        median = np.mean([m for i, _, m in rows if i == item])
        print(f"  {item:24s} true {np.exp(truth[item]):.2f}, kept {np.exp(kept):.2f}, pool median {np.exp(median):.2f} "
              f"(geometric means over pools)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--part", type=int, default=0)
    parser.add_argument("--parts", type=int, default=1)
    parser.add_argument("--model", default="mar3d/assets/demo_model")
    parser.add_argument("--analyze", action="store_true")
    parser.add_argument("--pool", type=int, default=4)
    args = parser.parse_args()
    if args.analyze:
        analyze(args)
    else:
        collect(args)


if __name__ == "__main__":
    main()
