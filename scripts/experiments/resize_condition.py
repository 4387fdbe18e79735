"""Experiment (docs/results.md, "Session 17 experiments"): give a MAR model folder a finer image-token grid.

usage (repo root): .venv/bin/python scripts/experiments/resize_condition.py SRC_MODEL DST_MODEL IMAGE_SIZE

The small image encoder cuts its input into image_size / patch_size squared patches; every per-position parameter
of the condition buffer is tied to that grid: the encoder's position embedding, the null condition (CFG), and the
buffer rows of the MAE encoder's and decoder's position embeddings. Each is interpolated bicubically from the old
grid to the new one, so that the resized model starts where the old one was (docs: F@0.1 0.583 zero-shot against
0.642 on seed 0) and can be fine-tuned (`mar3d train mar-lr --init-from DST_MODEL`, a config with the new size).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


def resize_grid(rows: torch.Tensor, old: int, new: int) -> torch.Tensor:
    """(1, old², D) per-position vectors on an old × old grid -> (1, new², D), bicubic."""
    width = rows.shape[-1]
    grid = rows.reshape(1, old, old, width).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, new * new, width)


def main(source: Path, target: Path, image_size: int) -> None:
    document = json.loads((source / "config.json").read_text())
    encoder = document["config"]["image_encoder"]
    if encoder["kind"] != "small" or image_size % encoder["patch_size"]:
        sys.exit(f"{source}: needs a 'small' image encoder and a size that is a multiple of its patch size")
    old, new = encoder["image_size"] // encoder["patch_size"], image_size // encoder["patch_size"]
    state = {k: v.float() for k, v in load_file(str(source / "model.safetensors")).items()}
    state["image_encoder.pos_embed"] = resize_grid(state["image_encoder.pos_embed"], old, new)
    for key in ("null_condition", "encoder_pos", "decoder_pos"):  # image rows first, then the rest (LR / tokens)
        rows = state[key]
        state[key] = torch.cat([resize_grid(rows[:, :old * old], old, new), rows[:, old * old:]], dim=1)
    encoder["image_size"] = image_size
    target.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(target / "model.safetensors"))
    (target / "config.json").write_text(json.dumps(document, indent=1))
    print(f"{source} -> {target}: {old}x{old} -> {new}x{new} image tokens")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
