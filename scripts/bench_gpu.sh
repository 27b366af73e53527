#!/usr/bin/env bash
# The accelerator benchmark (scripts/bench_gpu.py): ttc's bfloat16 decode, pool sampling against
# particle filtering with a PRM, and PRM scoring of a pool, for random weights of the shapes of
# SmolLM2-135M and Llama-3.2-1B at batches 64 and 256, each against the HBM-bandwidth roofline
# (spec sheet and measured). One command, ~8 minutes on an H100, compilation included; it skips
# the cells that would end past 480 s (--deadline-s) and says so.
# Usage (OUT_DIR relative to the current directory; the script runs from the repository root):
#   bash scripts/bench_gpu.sh [OUT_DIR] [bench_gpu.py options]   # default OUT_DIR: bench_gpu_out
# Writes OUT_DIR/bench_gpu.json, OUT_DIR/bench_gpu.md (the summary table and the targets, met or
# not) and OUT_DIR/bench_gpu.log. Exits nonzero when a cell failed (1), was skipped for time (3),
# or the backend is a CPU (2).
# It installs nothing: the host must already have jax with its accelerator plugin, flax, optax,
# orbax-checkpoint, numpy, tqdm and jaxtyping (the project's device image has them; it cannot
# fetch packages). It runs this checkout through PYTHONPATH. Compilations are cached under
# $JAX_COMPILATION_CACHE_DIR (default /tmp/ttc-bench-jax-cache), so a rerun on the same machine
# spends less time compiling.
set -euo pipefail
out="${1:-bench_gpu_out}"
shift || true
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/ttc-bench-jax-cache}"
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" \
    2>&1 | tee "$out/bench_gpu.log"
python3 scripts/bench_gpu.py --out "$out" "$@" 2>&1 | tee -a "$out/bench_gpu.log"
