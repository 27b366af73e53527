#!/usr/bin/env bash
# Runs every published-claim reproduction (conf/experiment/*.yaml), then collects their tables,
# figures and verdicts into docs/RESULTS.md.
#
#   scripts/reproduce_all.sh                 # default task (arithmetic chains)
#   scripts/reproduce_all.sh task=graph      # any extra override goes to every experiment
#
# Experiments of one grid share outputs/<name>/ (records and sample pools), so the first one
# pays for sampling and the others mostly re-analyse; everything resumes if interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
experiments=(compute_optimal method_by_difficulty particle_filtering verifier_free
             verifier_quality coverage model_size)
for e in "${experiments[@]}"; do
  echo "=== ${e} $*"
  python -m experiments.reproduce "+experiment=${e}" "$@"
done
python scripts/collect_results.py
