"""The results table and picture of docs/results.md from `scripts/evaluate_demo.sh`'s evaluation folder.

Tables: the mean CD, F@0.1/0.05/0.02 and NC of each variant over the held-out objects; for a generated variant
the mean ± standard deviation of that mean over its sampling seeds (EVAL/<variant>/seed<S>/metrics/metrics.json),
for the VAE ceiling one value (EVAL/vae/metrics/metrics.json); then F@0.1 per object, each variant's
seed mean beside a sphere's (* marks an object where the variant does no better than the sphere); then the
paired differences (b) − (a) and (b) − (c) over the seeds both variants have: seeds move every variant
together, so a difference is judged by its per-seed values and its standard error, not by the variants'
spreads. Written to EVAL/results.md and printed.
Picture: one row per held-out object: the input view, normal maps of the MAR-LR-only and LR + HR meshes of the
first seed, and of the ground truth, all from the input camera (the evaluation's aligned meshes, framed
together per row).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from mar3d.data.render_normals import normal_map_row, on_white  # OSMesa before pyrender
from mar3d.evaluation.sheet import comparison_sheet
import trimesh  # noqa: E402

# (folder, row title, per-object column)
VARIANTS = [("vae", "VAE ceiling (512 tokens, own surface)", "VAE"), ("lr_only", "(a) MAR-LR only", "(a)"),
            ("lr_hr", "(b) MAR-LR + MAR-HR", "(b)"), ("lr_hr_noaug", "(c) LR + HR, no condition augmentation", "(c)")]
COLUMNS = [("cd", "CD ↓"), ("f_score@0.1", "F@0.1 ↑"), ("f_score@0.05", "F@0.05 ↑"), ("f_score@0.02", "F@0.02 ↑"),
           ("nc", "NC ↑")]
CELL = 192


def sphere_scores(eval_dir: Path) -> dict[str, dict[str, float]]:
    """Object id -> metrics of a sphere (a guess that ignores the image) against its held-out ground truth,
    scored like the predictions (aligned meshes of the lr_hr evaluation: the ground truth already in view frame)."""
    from mar3d.evaluation.protocol import evaluate_pair

    sphere = trimesh.creation.icosphere(4)
    return {gt_path.name.removesuffix(".gt.glb"): evaluate_pair(sphere, trimesh.load(gt_path, force="mesh"),
                                                                "none").metrics
            for gt_path in sorted((metric_dirs(eval_dir, "lr_hr")[0] / "aligned").glob("*.gt.glb"))}


def per_object(eval_dir: Path, variant: str, key: str) -> dict[str, float]:
    """Object id -> the variant's metric, averaged over its sampling seeds (objects that failed are left out)."""
    values: dict[str, list[float]] = {}
    for folder in metric_dirs(eval_dir, variant):
        if (folder / "metrics.json").exists():
            for record in json.loads((folder / "metrics.json").read_text())["objects"]:
                if record["status"] == "ok":
                    values.setdefault(record["gt_id"], []).append(record["metrics"][key])
    return {object_id: float(np.mean(v)) for object_id, v in values.items()}


def per_object_table(eval_dir: Path, sphere: dict[str, dict[str, float]], key: str = "f_score@0.1") -> str:
    """One row per held-out object: the metric of each variant (seed mean) and of the sphere; a variant at or
    below the sphere is marked with *."""
    columns = [(short, per_object(eval_dir, name, key)) for name, _, short in VARIANTS]
    columns = [(short, values) for short, values in columns if values]
    lines = [f"| object ({key}) | " + " | ".join(short for short, _ in columns) + " | sphere |",
             "|---|" + "---:|" * (len(columns) + 1)]
    for object_id, scores in sphere.items():
        cells = []
        for _, values in columns:
            value = values.get(object_id)
            cells.append("–" if value is None else f"{value:.2f}" + ("*" if value <= scores[key] else ""))
        lines.append(f"| {object_id} | " + " | ".join(cells) + f" | {scores[key]:.2f} |")
    return "\n".join(lines)


def metric_dirs(eval_dir: Path, variant: str) -> list[Path]:
    """The variant's evaluation folders: one per sampling seed (seed order), or its single one."""
    seeds = sorted((eval_dir / variant).glob("seed*/metrics"), key=lambda p: int(p.parent.name[4:]))
    return seeds or [eval_dir / variant / "metrics"]


def table(eval_dir: Path, sphere_rows: dict[str, dict[str, float]]) -> str:
    sphere = {key: float(np.mean([r[key] for r in sphere_rows.values()])) for key, _ in COLUMNS}
    sphere["objects"] = len(sphere_rows)
    lines = ["| model | objects | samples | " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---|---:|---:|" + "---:|" * len(COLUMNS)]
    for name, title, _ in VARIANTS:
        summaries = [json.loads((d / "metrics.json").read_text())["summary"]
                     for d in metric_dirs(eval_dir, name) if (d / "metrics.json").exists()]
        if not summaries:
            continue
        cells = []
        for key, _ in COLUMNS:
            values = np.array([summary["mean"][key] for summary in summaries])
            cells.append(f"{values.mean():.3f}" + (f" ± {values.std():.3f}" if len(values) > 1 else ""))
        counts = {(s["evaluated"], s["evaluated"] + s["failed"]) for s in summaries}
        objects = " / ".join(f"{done} of {total}" for done, total in sorted(counts))
        seeds = f"{len(summaries)} seeds" if len(summaries) > 1 else "1"
        lines.append(f"| {title} | {objects} | {seeds} | " + " | ".join(cells) + " |")
    lines.append(f"| a sphere (ignores the image) | {sphere['objects']} | – | "
                 + " | ".join(f"{sphere[key]:.3f}" for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


# (minuend, subtrahend, row title): what MAR-HR adds, and what condition augmentation adds (Table 2)
PAIRS = [("lr_hr", "lr_only", "MAR-HR: (b) − (a)"), ("lr_hr", "lr_hr_noaug", "condition augmentation: (b) − (c)")]


def seed_means(eval_dir: Path, variant: str) -> dict[int, dict[str, float]]:
    """Sampling seed -> the variant's mean metrics over the objects, for every seed it was scored with."""
    return {int(d.parent.name[4:]): json.loads((d / "metrics.json").read_text())["summary"]["mean"]
            for d in metric_dirs(eval_dir, variant)
            if d.parent.name.startswith("seed") and (d / "metrics.json").exists()}


def paired_table(eval_dir: Path) -> str:
    """Per metric, the mean over shared seeds of (first − second) ± its standard error; F@0.1 per seed."""
    lines = ["| difference | seeds | " + " | ".join(title for _, title in COLUMNS) + " | F@0.1 per seed |",
             "|---|---:|" + "---:|" * len(COLUMNS) + "---|"]
    for first, second, title in PAIRS:
        a, b = seed_means(eval_dir, first), seed_means(eval_dir, second)
        seeds = sorted(set(a) & set(b))
        if len(seeds) < 2:
            continue
        cells = []
        for key, _ in COLUMNS:
            d = np.array([a[s][key] - b[s][key] for s in seeds])
            cells.append(f"{d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(len(d)):.3f}")
        per_seed = " / ".join(f"{a[s]['f_score@0.1'] - b[s]['f_score@0.1']:+.3f}" for s in seeds)
        lines.append(f"| {title} | {len(seeds)} | " + " | ".join(cells) + f" | {per_seed} |")
    return "\n".join(lines)


def picture(eval_dir: Path, inputs_dir: Path, out: Path) -> None:
    rows = []
    for image_path in sorted(inputs_dir.glob("*.png")):
        with Image.open(image_path) as im:
            view = on_white(np.asarray(im.convert("RGBA").resize((CELL, CELL), Image.LANCZOS)))
        meshes = []
        for variant, part in (("lr_only", "pred"), ("lr_hr", "pred"), ("lr_hr", "gt")):
            path = metric_dirs(eval_dir, variant)[0] / "aligned" / f"{image_path.stem}.{part}.glb"
            meshes.append(trimesh.load(path, force="mesh") if path.exists() else None)
        rows.append((image_path.stem, [view] + normal_map_row(meshes, np.eye(3), CELL)))
    sheet = comparison_sheet(["input view", "MAR-LR only", "LR + HR", "ground truth"], rows, CELL)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(256).save(out, optimize=True)  # a palette keeps the README picture small


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval", required=True, type=Path, help="the evaluation folder (runs/demo/eval)")
    parser.add_argument("--inputs", required=True, type=Path, help="the input images (<id>.png)")
    parser.add_argument("--out", required=True, type=Path, help="the picture (PNG)")
    args = parser.parse_args()
    sphere = sphere_scores(args.eval)
    text = table(args.eval, sphere) + "\n\n" + per_object_table(args.eval, sphere) + "\n\n" + paired_table(args.eval)
    (args.eval / "results.md").write_text(text + "\n")
    print(text)
    picture(args.eval, args.inputs, args.out)
    print(f"picture -> {args.out}")


if __name__ == "__main__":
    main()
