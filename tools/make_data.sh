#!/usr/bin/env bash
# Generate the mini-V2X dataset (OPV2V layout) used by `make models` and `make paper-table`.
# Idempotent: a split is regenerated only when its stamp (the generator arguments) changed.
# WORLD=open picks another world preset of config/worlds.yaml (default: the file's default).
set -eo pipefail
root=${1:-data/mini-v2x}
world=${WORLD:-$(python -c 'from codealign_ros.data.world_presets import default_world as d; print(d())')}
gen() {  # split scenes seed
  local split=$1 scenes=$2 seed=$3 stamp="$root/$1/.generated"
  local args="--format opv2v --scenes $scenes --frames 20 --agents 3 --rsu --seed $seed --split $split --world $world"
  if [[ -f $stamp && $(cat "$stamp") == "$args" ]]; then
    echo "data: $root/$split up to date"; return
  fi
  rm -rf "${root:?}/$split"
  echo "data: generating $root/$split ($args)"
  codealign synth --out "$root" $args
  echo "$args" > "$stamp"
}
gen train 16 100 &   # the big split beside the two small ones: 2 cores
train=$!
gen validate 2 500 && gen test 4 900
wait $train
