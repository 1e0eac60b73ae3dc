#!/usr/bin/env bash
# 12B-shape parity of avserve's engine (CUDA backend, real loader and model path) with transformers 5.17, and a
# 262,144-token context through the engine. On the GPU machine from the repository root, .devdeps carried
# (scripts/device_deps fetch):  bench/engine_gpu/parity_12b.sh      logs and results under $OUT
# Needs ~25 GB of disk for the one-file checkpoint.
# Last, bench/engine_bench times the engine itself on that checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/parity_12b}
work=${PARITY_WORK:-/tmp/parity_12b_work}
prefix=${AVSERVE_DEPS_PREFIX:-/tmp/avserve_deps}
build=${AVSERVE_GPU_BUILD:-/tmp/avserve_build_gpu}
mkdir -p "$out" "$work/engine" "$work/long"
if [ ! -f "$build/CMakeCache.txt" ]; then
  scripts/device_deps unpack "$prefix" >/dev/null
  scripts/device_deps configure "$prefix" "$build" -DAVSERVE_BUILD_BENCH=ON >"$out/configure.log" 2>&1 ||
    { tail -30 "$out/configure.log"; exit 1; }
fi
# shellcheck disable=SC1091
source "$prefix/env.sh"
cmake --build "$build" --target logits_dump engine_bench -j "$(nproc)" >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
dump=$build/bench/engine_gpu/logits_dump
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/card.txt"
PYTHONUNBUFFERED=1 python3 bench/engine_gpu/parity_12b.py make "$work" --tokens "${PARITY_TOKENS:-8192}" 2>&1 |
  grep -v Warning | tee "$out/make.log"
"$dump" --checkpoint "$work/ckpt" --inputs "$work/inputs" --out "$work/engine" --backend cuda 2>&1 | tee "$out/engine.log"
python3 bench/engine_gpu/parity_12b.py compare "$work" 2>&1 | tee "$out/compare.log" || true
"$dump" --checkpoint "$work/ckpt" --inputs text:262144 --out "$work/long" --backend cuda --chunk 8192 \
  --rows_every 65536 2>&1 | tee "$out/long_context.log" || true
# The engine's own speed on the same checkpoint (prefill in 8K steps; decode at 32K; 8 questions on one prefix
# decoding together), next to bench/engine_gpu.sh's op-level numbers.
"$build/engine/engine_bench" --checkpoint "$work/ckpt" --backend cuda --chunk 8192 --prefill 32768,65536 \
  --decode_ctx 32768 --decode_tokens 32 --batch 8 --reps 1 2>&1 | tee "$out/engine_bench.log" || true
