#!/usr/bin/env bash
# Experiment (docs/results.md, "Session 10 experiments"): one exported model on the 10 held-out examples/,
# MAR-LR only (HR=1: the whole cascade), over the sampling seeds in SEEDS (default 0 1 2), scored as
# scripts/evaluate_demo.sh's (a) (or (b) with HR=1)
# (docs/protocol.md, known camera, view 0); prints F@0.1 per seed, mean ± std, CD and NC.
# usage (repo root): scripts/experiments/score_seeds.sh MODEL_DIR OUT [mar3d generate flags, e.g. --temperature 0.5]
# INPUTS: the folder of images to generate from (default examples/; e.g. view 0 of training objects, copied from
# runs/prepared/ycb/<id>/views/000.png); GT: the prepared folder they are scored against (default runs/prepared/ycb).
# Outputs: OUT/seed<S>/meshes, OUT/seed<S>/metrics. Finished seeds are kept (rerun to resume).
set -euo pipefail
model=$1; out=$2; shift 2
read -ra SEEDS <<< "${SEEDS:-0 1 2}"
inputs=${INPUTS:-examples}; gt=${GT:-runs/prepared/ycb}
cascade=$([ "${HR:-0}" = 1 ] && echo --hr || echo --no-hr)
for seed in "${SEEDS[@]}"; do
  .venv/bin/mar3d generate "$inputs" --model "$model" --out "$out/seed$seed/meshes" --seed "$seed" --no-progress \
    "$cascade" "$@" > /dev/null
  [ -e "$out/seed$seed/metrics/metrics.json" ] || .venv/bin/mar3d evaluate --pred "$out/seed$seed/meshes" \
    --gt "$gt" --views "$gt" --view 0 --out "$out/seed$seed/metrics" > /dev/null
done
.venv/bin/python - "$out" "${SEEDS[@]}" <<'PY'
import json, sys
import numpy as np
out, seeds = sys.argv[1], sys.argv[2:]
means = [json.load(open(f"{out}/seed{s}/metrics/metrics.json"))["summary"]["mean"] for s in seeds]
f = np.array([m["f_score@0.1"] for m in means])
print(f"{out}: F@0.1 {' / '.join(f'{x:.3f}' for x in f)} = {f.mean():.3f} ± {f.std():.3f}, "
      f"CD {np.mean([m['cd'] for m in means]):.3f}, NC {np.mean([m['nc'] for m in means]):.3f}")
PY
