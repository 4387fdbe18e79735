#!/usr/bin/env bash
# Reproduce docs/results.md: the demo model on the held-out YCB objects, following docs/protocol.md.
#   1. the ablation model: MAR-HR trained without condition augmentation (same config, seed and steps)
#   2. inputs: examples/<id>.png, view 0 (upright, azimuth 0, elevation 20) of each held-out object
#   3. generate (a) MAR-LR only, (b) LR + HR, (c) LR + HR without condition augmentation, each with the sampling
#      seeds in SEEDS (default 0 to 5: three seeds understate the spread, docs/results.md); evaluate each with
#      the known cameras (exact alignment)
#   4. the VAE ceiling: reconstruct the held-out objects from their own surface (512 tokens) and evaluate
#   5. the picture (docs/images/results.png) and the table (RUNS/eval/results.md)
# Needs the prepared data of scripts/train_demo.sh (runs/prepared). The ablation trains against the VAE run in
# runs/demo when it is there, else against the model's own (bf16) VAE, and shares the model's MAR-LR. Every stage skips
# what it already finished. ABLATION=0 skips the ablation (1. and (c)): its MAR-HR costs as long as the model's.
set -euo pipefail
cd "$(dirname "$0")/.."
# The environment scripts/setup.sh made, unless one is active already.
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
RUNS=${RUNS:-runs/demo}
MODEL=${MODEL:-mar3d/assets/demo_model}
PREPARED=runs/prepared/ycb
EVAL=$RUNS/eval
# The VAE the ablation trains against: train_demo.sh's run, else the bundled weights. Its MAR-LR is the model's own
# (the same weights as (b), whichever train_demo.sh stage made them).
VAE=$([ -e "$RUNS/vae/model" ] && echo "$RUNS/vae" || echo "$MODEL/vae")
MAR_LR=$MODEL/mar_lr
read -ra SEEDS <<< "${SEEDS:-0 1 2 3 4 5}"
ABLATION=${ABLATION:-1}
# Extra `mar3d generate` options for every variant (default: none, the model's fast defaults).
read -ra GENERATE_OPTIONS <<< "${GENERATE_OPTIONS:-}"
mapfile -t HOLDOUT < <(grep -v '^#' mar3d/configs/holdout/ycb.txt)
DATA=(runs/prepared/ycb runs/prepared/household)
mkdir -p "$EVAL"

# 1. MAR-HR without condition augmentation (Table 2's ablation at our scale): train_demo.sh's MAR-HR stage
#    with this one change (one thread, as there) and as many steps as the model's MAR-HR took (its pipeline.json).
if [ "$ABLATION" != 0 ]; then
  python3 - "$RUNS/mar_hr_noaug.yaml" <<'PY'
import sys, yaml
from importlib.resources import files
config = yaml.safe_load(files("mar3d.configs").joinpath("mar/small.yaml").read_text())
config["model"]["condition_augmentation"] = False
open(sys.argv[1], "w").write(yaml.safe_dump(config, sort_keys=False))
PY
  HR_STEPS=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["sources"]["mar_hr"]["trained_steps"])' \
    "$MODEL/pipeline.json")
  if [ ! -e "$RUNS/mar_hr_noaug/model/model.safetensors" ]; then
    resume=$([ -e "$RUNS/mar_hr_noaug/checkpoints/last.ckpt" ] && echo --resume || true)
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 mar3d train mar-hr --config "$RUNS/mar_hr_noaug.yaml" --data "${DATA[@]}" \
      --exclude "${HOLDOUT[@]}" --vae "$VAE" --out "$RUNS/mar_hr_noaug" --max-steps "$HR_STEPS" --no-progress $resume
  fi
  # The same sampling defaults as the model it is compared with (its pipeline.json), so that (b) and (c) differ in
  # the MAR-HR weights alone.
  mapfile -t DEFAULTS < <(python3 -c 'import json, sys
for key, value in json.load(open(sys.argv[1]))["defaults"].items(): print(f"--set={key}={json.dumps(value)}")' "$MODEL/pipeline.json")
  mar3d export --vae "$VAE" --mar-lr "$MAR_LR" --mar-hr "$RUNS/mar_hr_noaug" --out "$RUNS/model_noaug" \
    --dtype bfloat16 --overwrite "${DEFAULTS[@]}"
fi

# 2. Inputs: the bundled examples are these renders (the evaluation pairs <id>.glb with view 0 of <id>).
mkdir -p examples
for id in "${HOLDOUT[@]}"; do cp "$PREPARED/$id/views/000.png" "examples/$id.png"; done

# 3. Generate and evaluate.
run_variant() {  # NAME MODEL [generate options]: one folder per sampling seed, EVAL/NAME/seed<S>/
  local name=$1 model=$2; shift 2
  for seed in "${SEEDS[@]}"; do
    local out=$EVAL/$name/seed$seed
    mar3d generate examples --model "$model" --out "$out/meshes" --seed "$seed" --no-progress \
      "${GENERATE_OPTIONS[@]}" "$@"
    [ -e "$out/metrics/metrics.json" ] || \
      mar3d evaluate --pred "$out/meshes" --gt "$PREPARED" --views "$PREPARED" --view 0 --out "$out/metrics"
  done
}
run_variant lr_only "$MODEL" --no-hr
run_variant lr_hr "$MODEL" --hr
[ "$ABLATION" = 0 ] || run_variant lr_hr_noaug "$RUNS/model_noaug" --hr

# 4. The VAE ceiling: the held-out objects through the VAE alone (512 tokens), written in their source files' frame.
mar3d reconstruct "${HOLDOUT[@]/#/$PREPARED/}" --vae "$MODEL/vae" --out "$EVAL/vae/meshes" --tokens 512
[ -e "$EVAL/vae/metrics/metrics.json" ] || \
  mar3d evaluate --pred "$EVAL/vae/meshes" --gt "$PREPARED" --align none --out "$EVAL/vae/metrics"

# 5. Table (mean ± spread over the seeds) and picture (the first seed).
python3 scripts/results_figure.py --eval "$EVAL" --inputs examples --out docs/images/results.png
