#!/usr/bin/env bash
# Train every mini component from nothing as two single-threaded job chains side by side
# (on 2 cores this beats one job on 2 threads: OpenMP spin-waits under load).
# Usage: tools/train_models.sh [OUT] [extra `codealign train` args]
set -eo pipefail
out=${1:-models/mini}; shift || true
train() { codealign train --profile mini --data data/mini-v2x --out "$out" --threads 1 "$@"; }
mkdir -p "$out"
start=$(date +%s)
( train --stage base --only m1,m2,m3 "$@" && train --stage codespace --only g2,g3 "$@" ) \
  > "$out/train-lidar.log" 2>&1 &
lidar=$!
( train --stage base --only m4,m5 "$@" && train --stage codespace --only g1,g4 "$@" ) \
  > "$out/train-camera.log" 2>&1 &
camera=$!
wait $lidar && wait $camera
( train --stage translator --only g1,g2 "$@" && train --stage heal --only m2 "$@" \
  && train --stage ablation --only g1 "$@" ) > "$out/train-2a.log" 2>&1 &
a=$!
( train --stage translator --only g3,g4 "$@" && train --stage heal --only m4,m5 "$@" \
  && train --stage ablation --only g2 "$@" ) > "$out/train-2b.log" 2>&1 &
b=$!
wait $a && wait $b
echo "models: trained into $out in $(( $(date +%s) - start )) s"
