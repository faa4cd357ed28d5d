#!/usr/bin/env bash
# Train every mini component from nothing as two single-threaded job chains side by side
# (on 2 cores this beats one job on 2 threads: OpenMP spin-waits under load). Every stage runs
# to its validation plateau (AP50 on 20 validate frames every 50 steps; stop when 8 evaluations
# in a row gain under 0.5 AP) or to the profile's step cap (config/profiles.yaml train.steps;
# code spaces that train their backend too have the larger codespace_shared cap).
# Usage: tools/train_models.sh [OUT] [extra `codealign train` args]
set -eo pipefail
out=${1:-models/mini}; shift || true
train() { codealign train --profile mini --data data/mini-v2x --out "$out" --threads 1 \
  --val-frames 20 --plateau 8 --plateau-gain 0.005 "$@"; }
mkdir -p "$out"
start=$(date +%s)
# 1. base detectors, then each group's code space
( train --stage base --only m1,m2,m3 "$@" && train --stage codespace --only g2,g3 "$@" ) \
  > "$out/train-lidar.log" 2>&1 &
lidar=$!
( train --stage base --only m4,m5 "$@" && train --stage codespace --only g1,g4 "$@" ) \
  > "$out/train-camera.log" 2>&1 &
camera=$!
# 2. what needs only the LiDAR chain (Table 2 and Table 7 analogs) fills its wait
wait $lidar
( train --stage e2e "$@" && train --stage ablation --only frozen,trained "$@" ) \
  > "$out/train-extra.log" 2>&1 &
extra=$!
# 3. translators and HEAL baselines (every code space ready), then the remaining ablations
wait $camera
( train --stage translator --only g3,g4 "$@" && train --stage heal --only m4,m5 "$@" \
  && train --stage ablation --only one_to_one,_k64 "$@" ) > "$out/train-2b.log" 2>&1 &
b=$!
wait $extra
( train --stage translator --only g1,g2 "$@" && train --stage heal --only m2 "$@" \
  && train --stage ablation --only _k4,multi_head "$@" ) > "$out/train-2a.log" 2>&1 &
a=$!
wait $a && wait $b
echo "models: trained into $out in $(( $(date +%s) - start )) s"
