#!/usr/bin/env bash
# Reproduce the bundled demo model from scratch on this machine (2 CPU cores are enough; hours, not days):
#   prepare (58 YCB scans + 1000 pybullet objects) -> train VAE -> cache latents -> train MAR-LR -> train MAR-HR
#   -> export to mar3d/assets/demo_model.
# Every stage resumes where it stopped when the script is run again. Wall time per stage goes to
# $RUNS/timings.tsv. Configs: mar3d/configs/{vae,mar}/small.yaml; held-out objects: mar3d/configs/holdout/ycb.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${MAR3D_SHARED:-$(cd .. && pwd)/shared}
RUNS=${RUNS:-runs/demo}
OUT=${OUT:-mar3d/assets/demo_model}
WORKERS=${WORKERS:-2}
mkdir -p "$RUNS"
mapfile -t HOLDOUT < <(grep -v '^#' mar3d/configs/holdout/ycb.txt)
DATA=(runs/prepared/ycb runs/prepared/pybullet)

stage() {  # stage NAME COMMAND...: run, time, record
  local name=$1; shift
  local start=$SECONDS
  echo "== $name: $*"
  "$@"
  printf '%s\t%d\n' "$name" $((SECONDS - start)) >> "$RUNS/timings.tsv"
}
resume_flag() { [ -e "$1/checkpoints/last.ckpt" ] && echo --resume || true; }

stage prepare-ycb mar3d prepare "$SHARED/data/ycb" --out runs/prepared/ycb --up-axis z --workers "$WORKERS"
stage fetch-pybullet python3 scripts/fetch_pybullet_objects.py runs/pybullet
stage prepare-pybullet mar3d prepare runs/pybullet --out runs/prepared/pybullet --up-axis z --plain-colour random \
  --views 16 --workers "$WORKERS"
stage train-vae mar3d train vae --config small --data "${DATA[@]}" --exclude "${HOLDOUT[@]}" --out "$RUNS/vae" \
  $(resume_flag "$RUNS/vae")
stage cache-latents mar3d cache-latents "${DATA[@]}" --vae "$RUNS/vae" --out "$RUNS/latents"
for s in lr hr; do
  stage "train-mar-$s" mar3d train "mar-$s" --config small --data "${DATA[@]}" --exclude "${HOLDOUT[@]}" \
    --vae "$RUNS/vae" --latents "$RUNS/latents" --out "$RUNS/mar_$s" $(resume_flag "$RUNS/mar_$s")
done
stage export mar3d export --vae "$RUNS/vae" --mar-lr "$RUNS/mar_lr" --mar-hr "$RUNS/mar_hr" --out "$OUT" --overwrite
echo "demo model -> $OUT; stage times in $RUNS/timings.tsv"
