#!/usr/bin/env bash
# Experiment (docs/results.md, "Session 6 experiments"): the bundled demo with some stages swapped for other
# runs, generating the 10 held-out examples/ and scoring them (docs/protocol.md, known camera, view 0).
# usage (repo root): scripts/experiments/gen_eval.sh NAME VAE_RUN|"" MAR_LR_RUN|"" MAR_HR_RUN|"" [generate flags]
# Outputs under ${EXP:-runs/experiments}: models/NAME, gen/NAME, score/NAME (summary.json, report.html).
set -e
name=$1; vae=${2:-}; lr=${3:-}; hr=${4:-}; shift 4 || true
EXP=${EXP:-runs/experiments}
P="env OMP_NUM_THREADS=${THREADS:-1}"  # one thread: another job may share the 2 cores
model=$EXP/models/$name; rm -rf $model; mkdir -p $EXP/models
cp -r mar3d/assets/demo_model $model
for part in vae:$vae mar_lr:$lr mar_hr:$hr; do
  k=${part%%:*}; src=${part#*:}
  if [ -n "$src" ]; then cp $src/model/model.safetensors $model/$k/; cp $src/model/config.json $model/$k/config.json
    [ $k != vae ] && .venv/bin/python -c "
import json,sys; p='$model/$k/config.json'; d=json.load(open(p)); d['vae']='../vae'; json.dump(d,open(p,'w'),indent=1)"; fi
done
rm -rf $EXP/gen/$name $EXP/score/$name
$P .venv/bin/mar3d generate examples --out $EXP/gen/$name --model $model --seed 0 --no-progress "$@" > $EXP/gen_$name.log 2>&1
$P .venv/bin/mar3d evaluate --pred $EXP/gen/$name --gt runs/prepared/ycb --views runs/prepared/ycb --view 0 --out $EXP/score/$name >> $EXP/gen_$name.log 2>&1
cat $EXP/score/$name/summary.json 2>/dev/null | head -40
