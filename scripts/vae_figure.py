"""The VAE reconstruction table and picture of docs/vae.md from `mar3d evaluate-vae` folders.

Table: every model and token count of the given evaluation folders (their summary.json), one row each.
Picture: one row per object: the ground truth, then each named model's reconstruction at one token count
(the folders must have been written with --meshes), as normal maps from one oblique camera, framed together
per row so sizes compare.

    python scripts/vae_figure.py --eval runs/fig4/eval runs/fig4/eval_learned --data runs/prepared/ycb \
        --models pyramid single learned --tokens 512 --ids 025_mug 048_hammer --out docs/images/vae_fig4.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mar3d.data.render_normals import normal_map_row  # OSMesa before pyrender
from mar3d.evaluation.sheet import comparison_sheet
import trimesh  # noqa: E402

from mar3d.evaluation.vae_reconstruction import METRICS, normalized_ground_truth  # noqa: E402

CELL = 192
TITLES = {"iou_uniform": "IoU uniform ↑", "iou_near": "IoU near ↑", "cd": "CD ↓", "f_score@0.02": "F@0.02 ↑",
          "f_score@0.01": "F@0.01 ↑", "nc": "NC ↑"}


def oblique() -> np.ndarray:
    """A camera rotation that shows top and side: 35° about x, then 40° about the vertical."""
    a, b = np.deg2rad(35), np.deg2rad(40)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return rx @ ry


def table(eval_dirs: list[Path]) -> str:
    lines = ["| model | tokens | objects | " + " | ".join(TITLES[m] for m in METRICS) + " |",
             "|---|---:|---:|" + "---:|" * len(METRICS)]
    for eval_dir in eval_dirs:
        models = json.loads((eval_dir / "summary.json").read_text())["models"]
        for name, rows in models.items():
            for tokens, row in sorted(rows.items(), key=lambda kv: int(kv[0])):
                lines.append(f"| {name} | {tokens} | {row['objects']} | "
                             + " | ".join(f"{row[m]:.3f}" for m in METRICS) + " |")
    return "\n".join(lines)


def find_mesh(eval_dirs: list[Path], model: str, tokens: int, item_id: str) -> trimesh.Trimesh | None:
    for eval_dir in eval_dirs:
        path = eval_dir / "meshes" / model / str(tokens) / f"{item_id}.glb"
        if path.exists():
            return trimesh.load(path, force="mesh")
    return None


def picture(eval_dirs: list[Path], data: Path, models: list[str], tokens: int, ids: list[str], out: Path) -> None:
    rows = []
    for item_id in ids:
        meshes = [normalized_ground_truth(data, item_id)] + [find_mesh(eval_dirs, m, tokens, item_id) for m in models]
        rows.append((item_id, normal_map_row(meshes, oblique(), CELL)))
    sheet = comparison_sheet(["ground truth"] + [f"{m} ({tokens} tokens)" for m in models], rows, CELL)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(256).save(out, optimize=True)  # a palette keeps the docs picture small


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval", required=True, nargs="+", type=Path, help="evaluate-vae output folders")
    parser.add_argument("--data", required=True, type=Path, help="the prepared directory that was evaluated")
    parser.add_argument("--models", required=True, nargs="+", help="model names (columns of the picture)")
    parser.add_argument("--tokens", type=int, default=512, help="token count shown in the picture")
    parser.add_argument("--ids", required=True, nargs="+", help="objects (rows of the picture)")
    parser.add_argument("--out", required=True, type=Path, help="the picture (PNG)")
    args = parser.parse_args()
    print(table(args.eval))
    picture(args.eval, args.data, args.models, args.tokens, args.ids, args.out)
    print(f"picture -> {args.out}")


if __name__ == "__main__":
    main()
