#!/usr/bin/env bash
# The accelerator run: the same harness on a GPU (or TPU) host, ~100M and ~1B parameters.
# Run it on a machine with an accelerator; CI does not run it, and it has not been run yet.
# Usage, from the repository root:
#   bash scripts/bench_gpu.sh [OUT_DIR]         # writes OUT_DIR/bench_gpu*.json (default: .)
# It installs nothing: the host must already have jax with its accelerator plugin, flax, optax,
# orbax-checkpoint, numpy, tqdm and jaxtyping (the project's device image has them; it cannot
# fetch packages). It runs this checkout through PYTHONPATH.
# --skip-hf: the HF baseline in scripts/bench.py runs PyTorch on the CPU, where a 1B model would
# take hours and say nothing about the accelerator.
# The 1B cells at batch 1024 need ~25 GB of accelerator memory (KV cache 21 GB in f32).
set -euo pipefail
out="${1:-.}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import jax; print(jax.__version__, jax.devices())"
python3 scripts/bench.py --sections decode --sizes 100M 1B --batch 256 1024 --skip-hf \
    --out "$out/bench_gpu.json"
python3 scripts/bench.py --sections methods --out "$out/bench_gpu_methods.json"
