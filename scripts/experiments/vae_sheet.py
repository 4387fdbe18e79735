"""Picture for docs (docs/results.md, "Session 7"): held-out YCB objects reconstructed by several VAEs from
their own surfaces (512 tokens, 128^3, posterior mean), as normal maps in view 0's frame, beside the ground truth.

usage (repo root): python scripts/experiments/vae_sheet.py OUT.png NAME=VAE_RUN_OR_MODEL ...
"""
import sys

import torch

from mar3d.data import layout
from mar3d.data.render_normals import normal_map_row
from mar3d.evaluation.sheet import comparison_sheet
from mar3d.evaluation.vae_reconstruction import normalized_ground_truth
from mar3d.mesh.latents import latents_to_meshes
from mar3d.models.io import load_vae, model_folder
from mar3d.pipeline.reconstruct import encode_shapes, samples_from_prepared

ROOT, TOKENS, CELL = "runs/prepared/ycb", 512, 160
ids = [line.strip() for line in open("mar3d/configs/holdout/ycb.txt") if line.strip() and not line.startswith("#")]
torch.set_grad_enabled(False)
models = [(spec.split("=")[0], load_vae(model_folder(spec.split("=")[1])).float()) for spec in sys.argv[2:]]
rows = []
for item in ids:
    shape = samples_from_prepared(ROOT, item)
    meshes = [normalized_ground_truth(ROOT, item)]
    for _, vae in models:
        result = latents_to_meshes(vae, encode_shapes(vae, [shape], TOKENS, seed=0), resolution=128)[0]
        meshes.append(result.mesh if result.status == "ok" else None)
    rows.append((item, normal_map_row(meshes, layout.read_views(ROOT, item)[0]["rotation"], CELL)))
    print(item, flush=True)
sheet = comparison_sheet(["ground truth"] + [name for name, _ in models], rows, CELL)
sheet.quantize(256).save(sys.argv[1])
