#!/usr/bin/env bash
# Reproduce the bundled demo model from scratch on this machine (2 CPU cores are enough; hours, not days):
#   prepare (58 YCB scans + 1000 pybullet objects) -> train VAE -> cache latents -> train MAR-LR -> train MAR-HR
#   -> export to mar3d/assets/demo_model.
# Every stage resumes where it stopped when the script is run again. Wall time per stage goes to
# $RUNS/timings.tsv. Configs: mar3d/configs/{vae,mar}/small.yaml; held-out objects: mar3d/configs/holdout/ycb.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
# The environment scripts/setup.sh made, unless one is active already.
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
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
# The pybullet objects are simple: 8 upright views at 256² and fewer samples keep them at ~1.5 GB in all.
stage prepare-pybullet mar3d prepare runs/pybullet --out runs/prepared/pybullet --up-axis z --plain-colour random \
  --views 8 --resolution 256 --surface-samples 50000 --occupancy-samples 100000 --workers "$WORKERS"
stage train-vae mar3d train vae --config small --data "${DATA[@]}" --exclude "${HOLDOUT[@]}" --out "$RUNS/vae" \
  $(resume_flag "$RUNS/vae")
# The MARs train on the upright orbit (mar/small.yaml: data.views_per_object 8): cache only those views.
stage cache-latents mar3d cache-latents "${DATA[@]}" --vae "$RUNS/vae" --out "$RUNS/latents" --views 8
declare -A STEPS=([lr]=5000 [hr]=1500)  # an MAR-HR step costs ~4x an MAR-LR step
for s in lr hr; do
  stage "train-mar-$s" mar3d train "mar-$s" --config small --data "${DATA[@]}" --exclude "${HOLDOUT[@]}" \
    --vae "$RUNS/vae" --latents "$RUNS/latents" --out "$RUNS/mar_$s" --max-steps "${STEPS[$s]}" \
    $(resume_flag "$RUNS/mar_$s")
done
# bf16 weights: 24 MB instead of 48 MB (loading casts them back to fp32 parameters).
# Sampling defaults chosen for speed on 2 CPU cores (docs/benchmarks.md, "Generation with the bundled demo
# model"): about 12 s per image; `mar3d generate --quality high` gives back the release's settings.
stage export mar3d export --vae "$RUNS/vae" --mar-lr "$RUNS/mar_lr" --mar-hr "$RUNS/mar_hr" --out "$OUT" \
  --dtype bfloat16 --overwrite --set lr_steps=16 --set hr_steps=16 --set diffusion_steps=50 --set resolution=128 \
  --set faces=50000
echo "demo model -> $OUT; stage times in $RUNS/timings.tsv"
