#!/usr/bin/env bash
# Hydra multirun sweep whose jobs all append to one results store, then one merged re-plot.
#
#   scripts/sweep.sh [--launcher basic|local|slurm] [--jobs N] NAME [hydra overrides...]
#   scripts/sweep.sh temps 'eval.temperature=0.5,0.8,1.0' method=majority
#   scripts/sweep.sh --launcher local --jobs 4 seeds 'seeds=[0],[1],[2],[3]' method=majority
#   scripts/sweep.sh --launcher slurm temps 'eval.temperature=0.5,1.0' hydra.launcher.partition=gpu
#   TTC_LAUNCHER=local TTC_JOBS=2 scripts/sweep.sh temps 'eval.temperature=0.5,1.0'
#
# --launcher (default: $TTC_LAUNCHER, else basic):
#   basic  Hydra's basic launcher: the jobs one after another, in this process.
#   local  conf/hydra/launcher/local.yaml (submitit): the jobs as parallel processes on this
#          machine, N at a time (hydra.sweeper.max_batch_size=N), each with host_devices set to
#          its share of the cores (nproc / N) unless the overrides set host_devices.
#   slurm  conf/hydra/launcher/slurm.yaml (submitit): one SLURM array task per job, at most N
#          running at once (hydra.launcher.array_parallelism=N); this script waits for them.
# --jobs N (default: $TTC_JOBS, else 4 for local, the preset's 16 for slurm).
#
# Every job writes outputs/NAME/results.jsonl (or out_dir=DIR/results.jsonl): cells are keyed by
# method, budget, seed and a hash of the sampling config, each claimed before it is computed, so
# overlapping sweep points compute a shared cell once; finished cells are skipped when the sweep
# is re-run. Once every job has finished, the merged store is re-plotted to one
# outputs/NAME/frontier.csv and outputs/NAME/pareto.png (scripts/plot.py).
set -euo pipefail

usage() {
  echo "usage: $0 [--launcher basic|local|slurm] [--jobs N] NAME [hydra overrides...]" >&2
  exit 2
}

launcher=${TTC_LAUNCHER:-basic}
jobs=${TTC_JOBS:-}
while [ $# -gt 0 ]; do
  case $1 in
    --launcher) [ $# -ge 2 ] || usage; launcher=$2; shift 2 ;;
    --launcher=*) launcher=${1#--launcher=}; shift ;;
    --jobs) [ $# -ge 2 ] || usage; jobs=$2; shift 2 ;;
    --jobs=*) jobs=${1#--jobs=}; shift ;;
    -h|--help) usage ;;
    -*) echo "$0: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage
name=$1
shift
if [ -n "${jobs}" ] && ! [[ ${jobs} =~ ^[1-9][0-9]*$ ]]; then
  echo "$0: --jobs must be a positive integer, got '${jobs}'" >&2
  exit 2
fi

out_dir="outputs/${name}"
has_devices=false
for arg in "$@"; do
  case $arg in
    out_dir=*) out_dir=${arg#out_dir=} ;;
    host_devices=*) has_devices=true ;;
  esac
done

extra=()
case ${launcher} in
  basic) ;;
  local)
    jobs=${jobs:-4}
    extra+=("hydra/launcher=local" "hydra.sweeper.max_batch_size=${jobs}")
    if [ "${has_devices}" = false ]; then
      share=$(( $(nproc) / jobs ))
      extra+=("host_devices=$(( share > 0 ? share : 1 ))")
    fi
    ;;
  slurm)
    extra+=("hydra/launcher=slurm")
    if [ -n "${jobs}" ]; then
      extra+=("hydra.launcher.array_parallelism=${jobs}")
    fi
    ;;
  *) echo "$0: --launcher must be basic, local or slurm, got '${launcher}'" >&2; exit 2 ;;
esac

ttc-run -m "name=${name}" ${extra[@]+"${extra[@]}"} "$@"
python "$(dirname "$0")/plot.py" "${out_dir}"
