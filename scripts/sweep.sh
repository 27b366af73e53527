#!/usr/bin/env bash
# Hydra multirun sweep whose jobs all append to one results store, then one re-plot.
#
#   scripts/sweep.sh NAME [hydra overrides...]
#   scripts/sweep.sh temps 'eval.temperature=0.5,0.8,1.0' method=majority
#
# Every job writes outputs/NAME/results.jsonl (cells are keyed by method, budget, seed and a
# hash of the sampling config, so different sweep points never collide); finished cells are
# skipped when the sweep is re-run. The merged store is re-plotted to outputs/NAME/pareto.png.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 NAME [hydra overrides...]" >&2
  exit 2
fi
name=$1
shift
ttc-run -m "name=${name}" "$@"
python "$(dirname "$0")/plot.py" "outputs/${name}"
