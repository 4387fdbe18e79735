"""Experiment (docs/results.md, "Session 21 experiments"): MAR-LR candidates drawn from two models, half from each,
the outline choosing among all of them as the pipeline does. Not shipped: the pool scored below either model.
usage (repo root): python scripts/experiments/two_model_pool.py MODEL_A MODEL_B OUT SEED [SEED ...]
MODEL_A's pipeline runs with its defaults; MODEL_B lends its MAR-LR (both pipeline folders share one VAE).
Writes OUT/seed<S>/meshes/<id>.glb for each examples/*.png, as score_seeds.sh lays them out (score them with
`mar3d evaluate`, as score_seeds.sh does), and prints each image's kept candidate (< half: MODEL_A's) and IoUs.
"""
import sys
from pathlib import Path

import torch

from mar3d.pipeline.pipeline import MAR3DPipeline


def main(model_a: str, model_b: str, out: Path, seeds: list[int]) -> None:
    pipe, other = MAR3DPipeline.from_pretrained(model_a), MAR3DPipeline.from_pretrained(model_b)
    own = pipe.sample_stage

    def pooled(stage, condition, generator, settings, timings, lr_latents=None, progress=False, copies=1):
        if stage != "lr" or copies == 1:
            return own(stage, condition, generator, settings, timings, lr_latents, progress, copies)
        half = copies // 2
        first = own(stage, condition, generator, settings, timings, lr_latents, progress, half)
        second = other.sample_stage(stage, condition, generator, settings, timings, lr_latents, progress,
                                    copies - half)
        return torch.cat([first, second])

    pipe.sample_stage = pooled
    for seed in seeds:
        folder = out / f"seed{seed}" / "meshes"
        folder.mkdir(parents=True, exist_ok=True)
        for image in sorted(Path("examples").glob("*.png")):
            target = folder / f"{image.stem}.glb"
            if target.exists():
                continue
            [result] = pipe(str(image), seed=seed, use_hr=False)
            result.mesh.export(target)
            print(seed, image.stem, result.candidate, [round(s, 3) for s in result.candidate_scores], flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), [int(s) for s in sys.argv[4:]])
