"""Held-out VAE reconstruction at the demo's grid (128^3), scored as generation is (docs/protocol.md §2, no
alignment): volume IoU (uniform / near-surface labels), CD, F@0.1/0.05/0.02, NC, and the area share of normals
within 10 degrees of an axis. Used for docs/results.md ("Session 6 experiments"); LIMIT=N scores the first N;
IDS=a,b,c scores those prepared objects instead of the held-out ones (training objects, for the gap); ROOT=DIR
reads them from another prepared folder (default runs/prepared/ycb).

usage (repo root, runs/prepared/ycb prepared as scripts/train_demo.sh does):
    python scripts/experiments/eval_vae.py OUT.json NAME=VAE_RUN_OR_MODEL ...
"""
import json, math, sys, time
import numpy as np, torch
from mar3d.data import layout
from mar3d.evaluation.metrics import POINTS, point_metrics, sample_points
from mar3d.evaluation.vae_reconstruction import normalized_ground_truth, occupancy_ious
from mar3d.evaluation.protocol import evaluate_pair
from mar3d.mesh.latents import latents_to_meshes
from mar3d.models.io import model_folder
from mar3d.models.io import load_vae
from mar3d.pipeline.reconstruct import encode_shapes, samples_from_prepared

ROOT = __import__("os").environ.get("ROOT", "runs/prepared/ycb")
ids0 = [l.strip() for l in open("mar3d/configs/holdout/ycb.txt") if l.strip() and not l.startswith("#")]
if __import__("os").environ.get("IDS"):
    ids0 = __import__("os").environ["IDS"].split(",")
ids = [i for i in ids0 if __import__("os").path.exists(f"{ROOT}/{i}/samples.npz")][:int(__import__("os").environ.get("LIMIT", 99))]
TH = (0.1, 0.05, 0.02)
torch.set_grad_enabled(False)
out = {}
for spec in sys.argv[2:]:
    name, path = spec.split("=")
    vae = load_vae(model_folder(path)).float()
    rows = []
    for item in ids:
        shape = samples_from_prepared(ROOT, item)
        near = layout.read_meta(ROOT, item)["counts"]["occupancy_near_surface"]
        gt_mesh = normalized_ground_truth(ROOT, item)
        for tokens in vae.config.token_counts:
            lat = encode_shapes(vae, [shape], tokens, seed=0)
            iu, inr = occupancy_ious(vae, lat, *shape.occupancy, near)
            r = latents_to_meshes(vae, lat, resolution=128)[0]
            row = {"id": item, "tokens": tokens, "iou_uniform": iu, "iou_near": inr}
            if r.status == "ok":
                s = evaluate_pair(r.mesh, gt_mesh, "none", seed=0, thresholds=TH).metrics
                row.update({k: float(s[k]) for k in s if k.startswith(("f_score", "cd", "nc"))})
                n = np.asarray(r.mesh.face_normals); a = np.asarray(r.mesh.area_faces)
                row["axis10"] = float(a[np.abs(n).max(1) >= math.cos(math.radians(10))].sum() / a.sum())
            rows.append(row)
            print(name, item, tokens, {k: round(v, 3) for k, v in row.items() if isinstance(v, float)}, flush=True)
    summary = {}
    for tokens in vae.config.token_counts:
        part = [r for r in rows if r["tokens"] == tokens]
        keys = [k for k in part[0] if isinstance(part[0][k], float)]
        summary[tokens] = {k: float(np.nanmean([r.get(k, np.nan) for r in part])) for k in keys}
    out[name] = {"rows": rows, "summary": summary}
    print(name, json.dumps(summary, indent=1), flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
