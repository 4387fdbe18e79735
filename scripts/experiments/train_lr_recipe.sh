#!/usr/bin/env bash
# Experiment (docs/results.md, "Session 20 experiments" and "Session 21 experiments"): the bundled demo's MAR-LR
# recipe (scripts/train_demo.sh's MAR-LR stages: mar/small.yaml for 8000 steps, then mar/small_framed.yaml for 2000)
# trained with one training seed against the bundled VAE, then exported with the bundled VAE, MAR-HR and sampling
# defaults, so that score_seeds.sh scores it exactly as it scores the bundled model. Each stage resumes where it
# stopped when the script is run again.
# usage (repo root): scripts/experiments/train_lr_recipe.sh SEED OUT [BASE_RUN]
#   writes OUT/lr (the 8000-step stage), OUT/lr_framed (the fine-tune), OUT/model (the pipeline folder).
#   BASE_RUN: fine-tune this MAR-LR run instead of training OUT/lr (what the fine-tune's seed alone does).
# Threads: as the caller sets OMP_NUM_THREADS (1 each to train two seeds side by side on 2 cores, ~2.5 steps/s
# each, about 65 minutes for both; 2 for one alone, ~4 steps/s, about 42 minutes).
set -euo pipefail
[ $# -ge 2 ] || { sed -n 7,9p "$0" >&2; exit 2; }
seed=$1; out=$2; base=${3:-}
demo=mar3d/assets/demo_model
mapfile -t HOLDOUT < <(grep -v '^#' mar3d/configs/holdout/ycb.txt)
common=(--data runs/prepared/ycb runs/prepared/household --exclude "${HOLDOUT[@]}" --vae "$demo/vae" --seed "$seed"
        --no-progress)
resume_flag() { [ -e "$1/checkpoints/last.ckpt" ] && echo --resume || true; }
if [ -z "$base" ]; then
  base=$out/lr
  .venv/bin/mar3d train mar-lr --config small "${common[@]}" --out "$base" --max-steps 8000 $(resume_flag "$base")
fi
.venv/bin/mar3d train mar-lr --config small_framed "${common[@]}" --init-from "$base" --out "$out/lr_framed" \
  $(resume_flag "$out/lr_framed")
mapfile -t DEFAULTS < <(.venv/bin/python -c 'import json, sys
for k, v in json.load(open(sys.argv[1]))["defaults"].items(): print(f"--set={k}={json.dumps(v)}")' "$demo/pipeline.json")
.venv/bin/mar3d export --vae "$demo/vae" --mar-lr "$out/lr_framed" --mar-hr "$demo/mar_hr" --out "$out/model" \
  --dtype bfloat16 --overwrite "${DEFAULTS[@]}"
