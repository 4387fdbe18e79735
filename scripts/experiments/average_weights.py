"""Experiment (docs/results.md, "Session 21 experiments"): a uniform "model soup", the tensor-by-tensor mean of the
weights of model folders (config.json + model.safetensors) that share one architecture, e.g. fine-tunes of one
MAR-LR with different seeds. Not shipped: the soup of three fine-tunes scored below their mean.
usage (repo root): python scripts/experiments/average_weights.py OUT MODEL_DIR MODEL_DIR [MODEL_DIR ...]
OUT gets the first folder's config.json and the averaged weights (float64 sums, stored in the inputs' type).
"""
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file


def main(out: Path, folders: list[Path]) -> None:
    states = [load_file(str(folder / "model.safetensors")) for folder in folders]
    for folder, state in zip(folders[1:], states[1:]):
        if state.keys() != states[0].keys() or any(state[k].shape != v.shape for k, v in states[0].items()):
            sys.exit(f"{folder}: its weights do not match {folders[0]}'s (another architecture)")
    mean = {k: sum(s[k].double() for s in states).div(len(states)).to(v.dtype) for k, v in states[0].items()}
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folders[0] / "config.json", out / "config.json")
    save_file(mean, str(out / "model.safetensors"))
    print(f"averaged {len(folders)} models -> {out}")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), [Path(a) for a in sys.argv[2:]])
