#!/bin/bash
# The paper's Fig. 4 at our scale (docs/vae.md): three small VAEs on the 48 training YCB scans -- pyramid,
# single level, learned queries -- scored on the 10 held-out scans at 128-2048 tokens, with a picture.
# Measured on one H200 (training, the three arms at once: about 4 minutes) and this 2-core CPU (evaluation).
#   bash scripts/fig4.sh [RUNS_DIR]      (default runs/fig4; needs ../shared/data/ycb)
set -euo pipefail
cd "$(dirname "$0")/.."
# The environment scripts/setup.sh made, unless one is active already.
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
RUNS=${1:-runs/fig4}
SHARED=${MAR3D_SHARED:-../shared}
HOLDOUT=$(grep -v '^#' mar3d/configs/holdout/ycb.txt | tr '\n' ' ')
TRAIN=$(ls "$SHARED"/data/ycb/*.glb | grep -v -E "/($(echo $HOLDOUT | tr ' ' '|'))\.glb$")
# Fewer samples and tiny views (the views only supply the rotation augmentation): 24 MB, small enough to carry.
mar3d prepare $TRAIN --out "$RUNS/ycb_small_data" --views 8 --resolution 64 --surface-samples 10000 \
    --occupancy-samples 16000 --up-axis z --workers 2 -q
for arm in pyramid single learned; do
    mar3d train vae --config scripts/fig4/$arm.yaml --data "$RUNS/ycb_small_data" --out "$RUNS/$arm" --no-progress &
done
wait
# The held-out scans, as prepared for the demo (scripts/train_demo.sh): full sample counts.
[ -d runs/prepared/ycb ] || mar3d prepare "$SHARED"/data/ycb --out runs/prepared/ycb --up-axis z --workers 2 -q
common=(--data runs/prepared/ycb --only $HOLDOUT --resolution 128 --dtype bf16 --meshes --no-progress)
mar3d evaluate-vae --vae pyramid="$RUNS/pyramid" single="$RUNS/single" --tokens 128 256 512 1024 2048 \
    "${common[@]}" --out "$RUNS/eval"
mar3d evaluate-vae --vae learned="$RUNS/learned" --tokens 128 512 "${common[@]}" --out "$RUNS/eval_learned"
python scripts/vae_figure.py --eval "$RUNS/eval" "$RUNS/eval_learned" --data runs/prepared/ycb \
    --models pyramid single learned --tokens 512 --ids 025_mug 048_hammer 006_mustard_bottle 072-a_toy_airplane \
    --out docs/images/vae_fig4.png
