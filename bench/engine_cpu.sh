#!/usr/bin/env bash
# CPU engine speed on the tiny test checkpoints (bf16 and fp32). Usage: bench/engine_cpu.sh [build-dir] [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
threads=${2:-0}
cmake --build "$build" --target engine_bench -j2 >/dev/null
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
for ckpt in tiny tiny_f32; do
  "$build/engine/engine_bench" --checkpoint "tests/data/engine/$ckpt" --threads "$threads" --batch 4
done
