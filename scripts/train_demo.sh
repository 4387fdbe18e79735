#!/usr/bin/env bash
# Reproduce the bundled demo model from scratch on this machine (2 CPU cores are enough; about 120 minutes):
#   prepare (58 YCB scans + 1700 procedural household objects) -> train VAE -> train MAR-LR and MAR-HR side by side
#   -> fine-tune MAR-LR on framed renders -> export to mar3d/assets/demo_model.
# Every stage resumes where it stopped when the script is run again. Wall time per stage goes to
# $RUNS/timings.tsv. Configs: mar3d/configs/{vae,mar}/small.yaml, mar3d/configs/mar/small_framed.yaml; held-out objects: mar3d/configs/holdout/ycb.txt.
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
DATA=(runs/prepared/ycb runs/prepared/household)

stage() {  # stage NAME COMMAND...: run, time, record
  local name=$1; shift
  local start=$SECONDS
  echo "== $name: $*"
  "$@"
  printf '%s\t%d\n' "$name" $((SECONDS - start)) >> "$RUNS/timings.tsv"
}
resume_flag() { [ -e "$1/checkpoints/last.ckpt" ] && echo --resume || true; }

stage prepare-ycb mar3d prepare "$SHARED/data/ycb" --out runs/prepared/ycb --up-axis z --workers "$WORKERS"
# Object-like training data: 100 of each of the 17 household families, written deterministically (seed 0).
stage household mar3d household --out runs/household --count 1700 --seed 0
# Simple shapes: 8 upright views at 256² and fewer samples keep them small (~2.5 GB in all).
stage prepare-household mar3d prepare runs/household --out runs/prepared/household --up-axis z \
  --views 8 --resolution 256 --surface-samples 50000 --occupancy-samples 100000 --workers "$WORKERS"
stage train-vae mar3d train vae --config small --data "${DATA[@]}" --exclude "${HOLDOUT[@]}" --out "$RUNS/vae" \
  --no-progress $(resume_flag "$RUNS/vae")
# MAR-LR and MAR-HR both learn from the VAE's latents of the ground truth, so they train at the same time, one
# thread each (one core each on 2 cores), encoding latents on the fly. An MAR-HR step costs ~4x an MAR-LR step.
declare -A STEPS=([lr]=8000 [hr]=2000)
pids=()
for s in lr hr; do
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 stage "train-mar-$s" mar3d train "mar-$s" --config small --data "${DATA[@]}" \
    --exclude "${HOLDOUT[@]}" --vae "$RUNS/vae" --out "$RUNS/mar_$s" --max-steps "${STEPS[$s]}" --no-progress \
    $(resume_flag "$RUNS/mar_$s") > "$RUNS/mar_$s.log" 2>&1 &
  pids+=($!)
  echo "== train-mar-$s running in the background (log: $RUNS/mar_$s.log)"
done
for pid in "${pids[@]}"; do wait "$pid" || { echo "an MAR stage failed: see $RUNS/mar_*.log" >&2; exit 1; }; done
# MAR-LR fine-tuned on renders framed as inference frames an input (configs/mar/small_framed.yaml): F@0.1 +0.016,
# F@0.02 +0.053 over six seeds (docs/results.md, "Session 14"). About 20 minutes on one thread.
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 stage finetune-mar-lr-framed mar3d train mar-lr --config small_framed \
  --data "${DATA[@]}" --exclude "${HOLDOUT[@]}" --vae "$RUNS/vae" --init-from "$RUNS/mar_lr" --out "$RUNS/mar_lr_framed" \
  --no-progress $(resume_flag "$RUNS/mar_lr_framed") > "$RUNS/mar_lr_framed.log" 2>&1 \
  || { echo "the MAR-LR fine-tune failed: see $RUNS/mar_lr_framed.log" >&2; exit 1; }
# bf16 weights: 24 MB instead of 48 MB (loading casts them back to fp32 parameters).
# Sampling defaults chosen for speed on 2 CPU cores (docs/benchmarks.md, "Generation with the bundled demo
# model"): a few seconds per image; `mar3d generate --quality high` gives back the release's settings.
# Four MAR-LR candidates, the one whose outline matches the image kept, decoded without MAR-HR: with candidate
# selection MAR-LR alone scores the best F@0.1 and CD and is twice as fast; `--hr` runs the cascade (smoother
# surfaces, boxier boxes), docs/results.md "Candidate selection". Carving by the image's outline and filling it
# where the mesh leaves it uncovered (carve, fill) are export's defaults (docs/generate.md).
stage export mar3d export --vae "$RUNS/vae" --mar-lr "$RUNS/mar_lr_framed" --mar-hr "$RUNS/mar_hr" --out "$OUT" \
  --dtype bfloat16 --overwrite --set lr_steps=16 --set hr_steps=16 --set diffusion_steps=50 --set resolution=128 \
  --set faces=50000 --set candidates=4 --set use_hr=false
echo "demo model -> $OUT; stage times in $RUNS/timings.tsv"
