#!/usr/bin/env bash
# Benchmarks the CUDA backend against transformers (sdpa) on the same card, at the real Gemma 4 12B shape with
# random bf16 weights. Run on the GPU machine from the repository root, with the Debian libraries of
# scripts/device_deps in .devdeps/ (device tool: carry .devdeps):
#   bench/engine_gpu.sh                   build, gpu tests, peer, bench
#   ENGINE_GPU_PEER=0 bench/engine_gpu.sh skip transformers (no speedups in the last line)
#   ENGINE_GPU_TESTS=0 ...                skip the gpu tests
# Logs go to $OUT (default /tmp/engine_gpu). The last line printed is
#   engine prefill32k_s=<s> prefill64k_s=<s> decode_ms=<ms> speedup_prefill32k=<x> speedup_decode=<x> card=<name>
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/engine_gpu}
prefix=${AVSERVE_DEPS_PREFIX:-/tmp/avserve_deps}
build=${AVSERVE_GPU_BUILD:-/tmp/avserve_build_gpu}
prefill=${ENGINE_GPU_PREFILL:-32768,65536}
decode_ctx=${ENGINE_GPU_DECODE_CTX:-32768,262144}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/card.txt"

if [ ! -f "$build/CMakeCache.txt" ]; then
  scripts/device_deps unpack "$prefix" >/dev/null
  scripts/device_deps configure "$prefix" "$build" -DAVSERVE_BUILD_BENCH=ON >"$out/configure.log" 2>&1 ||
    { tail -30 "$out/configure.log"; exit 1; }
fi
# shellcheck disable=SC1091
source "$prefix/env.sh"
targets=(engine_gpu_bench)
[ "${ENGINE_GPU_TESTS:-1}" = 1 ] && targets+=(avserve_engine_cuda_test)
cmake --build "$build" --target "${targets[@]}" -j "$(nproc)" >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }

if [ "${ENGINE_GPU_TESTS:-1}" = 1 ]; then
  "$build/tests/engine/cuda/avserve_engine_cuda_test" --gtest_brief=1 2>&1 | tee "$out/gpu_tests.log" | tail -25 || true
fi
if [ "${ENGINE_GPU_PEER:-1}" = 1 ]; then
  PYTHONUNBUFFERED=1 python3 bench/engine_gpu/peer_transformers.py "$out/peer.txt" --lengths "$prefill" \
    2>&1 | tee "$out/peer.log" | grep -v Warning || true
fi
"$build/bench/engine_gpu/engine_gpu_bench" --prefill="$prefill" --decode_ctx="$decode_ctx" --peer="$out/peer.txt" \
  2>&1 | tee "$out/bench.log"
