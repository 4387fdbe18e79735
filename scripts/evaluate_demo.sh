#!/usr/bin/env bash
# Reproduce docs/results.md: the demo model on the held-out YCB objects, following docs/protocol.md.
#   1. the ablation model: MAR-HR trained without condition augmentation (same config, seed and steps)
#   2. inputs: examples/<id>.png, view 0 (upright, azimuth 0, elevation 20) of each held-out object
#   3. generate (a) MAR-LR only, (b) LR + HR, (c) LR + HR without condition augmentation; evaluate each
#      with the known cameras (exact alignment)
#   4. the VAE ceiling: reconstruct the held-out objects from their own surface (512 tokens) and evaluate
#   5. the picture (docs/images/results.png) and the table (RUNS/eval/results.md)
# Needs runs/demo from scripts/train_demo.sh. Every stage skips what it already finished.
set -euo pipefail
cd "$(dirname "$0")/.."
# The environment scripts/setup.sh made, unless one is active already.
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
RUNS=${RUNS:-runs/demo}
MODEL=${MODEL:-mar3d/assets/demo_model}
PREPARED=runs/prepared/ycb
EVAL=$RUNS/eval
SEED=${SEED:-0}
# Extra `mar3d generate` options for every variant (default: none, the model's fast defaults). The table in
# docs/results.md was made with the former defaults and "--dtype bf16 --resolution 192" on a CPU with native
# bf16: GENERATE_OPTIONS="--quality high --faces 0 --dtype bf16 --resolution 192" reproduces those settings.
read -ra GENERATE_OPTIONS <<< "${GENERATE_OPTIONS:-}"
mapfile -t HOLDOUT < <(grep -v '^#' mar3d/configs/holdout/ycb.txt)
DATA=(runs/prepared/ycb runs/prepared/pybullet)
mkdir -p "$EVAL"

# 1. MAR-HR without condition augmentation (Table 2's ablation at our scale).
python3 - "$RUNS/mar_hr_noaug.yaml" <<'PY'
import sys, yaml
from importlib.resources import files
config = yaml.safe_load(files("mar3d.configs").joinpath("mar/small.yaml").read_text())
config["model"]["condition_augmentation"] = False
open(sys.argv[1], "w").write(yaml.safe_dump(config, sort_keys=False))
PY
if [ ! -e "$RUNS/mar_hr_noaug/model/model.safetensors" ]; then
  resume=$([ -e "$RUNS/mar_hr_noaug/checkpoints/last.ckpt" ] && echo --resume || true)
  mar3d train mar-hr --config "$RUNS/mar_hr_noaug.yaml" --data "${DATA[@]}" --exclude "${HOLDOUT[@]}" \
    --vae "$RUNS/vae" --latents "$RUNS/latents" --out "$RUNS/mar_hr_noaug" --max-steps 1500 $resume
fi
mar3d export --vae "$RUNS/vae" --mar-lr "$RUNS/mar_lr" --mar-hr "$RUNS/mar_hr_noaug" --out "$RUNS/model_noaug" \
  --dtype bfloat16 --overwrite

# 2. Inputs: the bundled examples are these renders (the evaluation pairs <id>.glb with view 0 of <id>).
mkdir -p examples
for id in "${HOLDOUT[@]}"; do cp "$PREPARED/$id/views/000.png" "examples/$id.png"; done

# 3. Generate and evaluate.
run_variant() {  # NAME MODEL [generate options]
  local name=$1 model=$2; shift 2
  mar3d generate examples --model "$model" --out "$EVAL/$name/meshes" --seed "$SEED" --no-progress \
    "${GENERATE_OPTIONS[@]}" "$@"
  mar3d evaluate --pred "$EVAL/$name/meshes" --gt "$PREPARED" --views "$PREPARED" --view 0 --out "$EVAL/$name/metrics"
}
run_variant lr_only "$MODEL" --no-hr
run_variant lr_hr "$MODEL"
run_variant lr_hr_noaug "$RUNS/model_noaug"

# 4. The VAE ceiling: the held-out objects through the VAE alone (512 tokens), written in their source files' frame.
mar3d reconstruct "${HOLDOUT[@]/#/$PREPARED/}" --vae "$MODEL/vae" --out "$EVAL/vae/meshes" --tokens 512
mar3d evaluate --pred "$EVAL/vae/meshes" --gt "$PREPARED" --align none --out "$EVAL/vae/metrics"

# 5. Table and picture.
python3 scripts/results_figure.py --eval "$EVAL" --inputs examples --out docs/images/results.png
