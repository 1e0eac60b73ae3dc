#!/usr/bin/env bash
# One device call that does all of issue #6's GPU checks (the machine is cold for every call, so they share it):
# builds the CUDA targets while transformers writes the 12B-shape checkpoint, then runs the GPU tests, the 8K
# logit parity, the engine's own speeds and the 262,144-token context. From the repository root on the GPU
# machine, .devdeps carried. Logs go to $OUT (at most 8 files come back): all.log holds everything in order.
#   STEPS="tests parity bench gemv pdl ab abprefill profile host kernels ncu ncuattn ncudetail long peer" \
#     bench/engine_gpu/device_run.sh
#   (default: tests parity bench profile long)
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/device_run}
work=${PARITY_WORK:-/tmp/parity_12b_work}
prefix=${AVSERVE_DEPS_PREFIX:-/tmp/avserve_deps}
build=${AVSERVE_GPU_BUILD:-/tmp/avserve_build_gpu}
steps=" ${STEPS:-tests parity bench profile long} "
mkdir -p "$out" "$work/engine" "$work/long"
log=$out/all.log
t0=$SECONDS
say() { echo "[$((SECONDS - t0)) s] $*" | tee -a "$log"; }
has() { [[ "$steps" == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"

if [ ! -f "$build/CMakeCache.txt" ]; then
  scripts/device_deps unpack "$prefix" >/dev/null
  scripts/device_deps configure "$prefix" "$build" -DAVSERVE_BUILD_BENCH=ON >"$out/build.log" 2>&1 ||
    { tail -30 "$out/build.log"; exit 1; }
fi
# shellcheck disable=SC1091
source "$prefix/env.sh"
cmake --build "$build" --target avserve_engine_cuda_test logits_dump engine_bench engine_gpu_bench gemv_bench \
  -j "$(nproc)" >>"$out/build.log" 2>&1 &
build_pid=$!
needs_ckpt=0  # every step but tests and gemv reads the 12B-shape checkpoint
for step in parity bench pdl ab abprefill profile host ncu ncuattn ncudetail long peer; do has "$step" && needs_ckpt=1; done
if [ "$needs_ckpt" = 1 ] && [ ! -f "$work/ckpt/model.safetensors" ]; then
  say "making the 12B-shape checkpoint and transformers' logits"
  PYTHONUNBUFFERED=1 timeout 300 python3 bench/engine_gpu/parity_12b.py make "$work" \
    --tokens "${PARITY_TOKENS:-8192}" 2>&1 | grep -v Warning | tee -a "$log"
fi
wait "$build_pid" || { say "build failed"; tail -40 "$out/build.log" | tee -a "$log"; exit 1; }
say "built"
dump=$build/bench/engine_gpu/logits_dump
if has tests; then
  timeout 180 "$build/tests/engine/cuda/avserve_engine_cuda_test" --gtest_brief=1 >"$out/gpu_tests.log" 2>&1
  say "gpu tests exit $?"; grep -E "FAILED|PASSED|SKIPPED|Failure|error" "$out/gpu_tests.log" | head -40 | tee -a "$log"
fi
if has parity; then
  say "parity 8K"
  timeout 150 "$dump" --checkpoint "$work/ckpt" --inputs "$work/inputs" --out "$work/engine" --backend cuda \
    2>&1 | tee -a "$log"
  python3 bench/engine_gpu/parity_12b.py compare "$work" 2>&1 | tee -a "$log"
fi
if has bench; then
  say "engine_bench"
  # The first chunk size's line is the one bench/engine_gpu.sh reports; later ones time prefill only.
  batch=8
  for chunk in ${BENCH_CHUNKS:-8192}; do
    timeout "${BENCH_TIMEOUT:-150}" "$build/engine/engine_bench" --checkpoint "$work/ckpt" --backend cuda \
      --chunk "$chunk" --prefill "${BENCH_PREFILL:-32768,65536}" --decode_ctx "$([ $batch = 8 ] && echo 32768)" \
      --decode_tokens 32 --batch $batch --reps 1 --warmup "$chunk" 2>&1 | tee -a "$log"
    batch=0
  done
fi
if has pdl; then  # the same decode timings with programmatic dependent launch (engine/backend/cuda/ops/pdl.cuh)
  AVSERVE_PDL=1 timeout 100 "$build/engine/engine_bench" --checkpoint "$work/ckpt" --backend cuda --chunk 8192 \
    --prefill "" --decode_ctx 32768 --decode_tokens 32 --batch 8 --reps 1 2>&1 | sed 's/^/[PDL] /' | tee -a "$log"
fi
if has gemv; then  # a decode step's products alone, each skinny kernel against the read ceiling (gemv_bench.cu)
  say "gemv_bench"
  for m in 1 8; do
    timeout 60 "$build/bench/engine_gpu/gemv_bench" --reps 5 --m $m 2>&1 | tee -a "$log"
    AVSERVE_GEMV_ACCS=1 timeout 60 "$build/bench/engine_gpu/gemv_bench" --reps 5 --m $m 2>&1 |
      grep "step's products, mma" | sed 's/^/[one accumulator set] /' | tee -a "$log"
  done
fi
# Alternates the env settings of $1 (space-separated; "+" joins two in one setting) twice in one run, timing the
# engine_bench arguments that follow.
ab_rounds() {
  local cfgs=$1 round cfg
  shift
  for round in 1 2; do
    for cfg in $cfgs; do
      env ${cfg//+/ } timeout 120 "$build/engine/engine_bench" --checkpoint "$work/ckpt" --backend cuda --chunk 8192 \
        --reps 1 "$@" 2>&1 | grep "^engine_bench" | sed "s/^/[$cfg, round $round] /" | tee -a "$log"
    done
  done
}
if has ab; then  # decode timings of switchable paths (AB_CFGS)
  ab_rounds "${AB_CFGS:-AVSERVE_GEMV=auto AVSERVE_GEMV=rows AVSERVE_GEMV=mma}" --prefill "" --decode_ctx 32768 \
    --decode_tokens 32 --batch 8
fi
if has abprefill; then  # prefill timings of switchable paths (AB_PREFILL_CFGS)
  ab_rounds "${AB_PREFILL_CFGS:-AVSERVE_SOFTMAX_SMEM=1 AVSERVE_SOFTMAX_SMEM=0}" --prefill 32768,65536 --decode_ctx "" \
    --warmup 8192
fi
if has profile; then
  say "op profile (AVSERVE_OP_TIMES=1: every op synchronised)"
  AVSERVE_OP_TIMES=1 timeout "${PROFILE_TIMEOUT:-120}" "$build/engine/engine_bench" --checkpoint "$work/ckpt" \
    --backend cuda --chunk 8192 --prefill "${PROFILE_PREFILL:-32768}" --decode_ctx 32768 --decode_tokens 8 --batch 8 \
    --reps 1 2>&1 |
    tee -a "$log"
fi
if has host; then
  say "host time per op (AVSERVE_OP_TIMES=host: no synchronisation; Download = waiting for the device)"
  AVSERVE_OP_TIMES=host timeout 120 "$build/engine/engine_bench" --checkpoint "$work/ckpt" --backend cuda \
    --chunk 8192 --prefill "" --decode_ctx 32768 --decode_tokens 32 --batch 8 --reps 1 2>&1 | head -45 | tee -a "$log"
fi
if has ncu; then
  # Kernel durations (no launch gaps) of the decode steps: every kernel after a 4K-token prefill, then the decode
  # attention kernels at a 32K context (one sequence and 8 questions).
  say "ncu: kernels of decode steps"
  bench_args=(--checkpoint "$work/ckpt" --backend cuda --chunk 8192 --prefill "" --decode_tokens 3 --reps 1)
  timeout 200 ncu --clock-control none --csv --metrics gpu__time_duration.sum,dram__bytes_read.sum --launch-skip 900 \
    --launch-count 1200 "$build/engine/engine_bench" "${bench_args[@]}" --decode_ctx 4096 --batch 0 \
    >"$out/ncu_step.csv" 2>/dev/null
  # The first ~1,100 attention launches are the single sequence's steps and the forks' one-token prefills.
  timeout 200 ncu --clock-control none --csv --metrics gpu__time_duration.sum,dram__bytes_read.sum -k regex:'DecodeMma|CombineSplits|AppendKv' \
    --launch-skip "${NCU_ATTN_SKIP:-0}" --launch-count 400 "$build/engine/engine_bench" "${bench_args[@]}" \
    --decode_ctx 32768 --batch 8 >"$out/ncu_attn.csv" 2>/dev/null
  python3 bench/engine_gpu/ncu_summary.py "$out/ncu_step.csv" "$out/ncu_attn.csv" 2>&1 | tee -a "$log"
fi
if has kernels; then  # the ceilings and the attention kernels alone, then ncu's full report of one sliding launch
  timeout 120 "$build/bench/engine_gpu/engine_gpu_bench" --kernels_only 2>&1 | tee -a "$log"
  if [ "${NCU_KERNEL:-AttentionKernel}" != none ]; then
    timeout 200 ncu --set full -k regex:"${NCU_KERNEL:-AttentionKernel}" --launch-skip "${NCU_SKIP:-6}" \
      --launch-count 1 "$build/bench/engine_gpu/engine_gpu_bench" --kernels_only >"$out/ncu_kernel.txt" 2>&1
    say "ncu exit $?"
  fi
fi
if has ncuattn; then
  # The decode attention kernels at a 32K context under each setting of NCU_ATTN_CFGS: the forks' one-token
  # prefills (grid z = 1) and the 8-question steps (z = 8, or the grouped launches' z).
  n=0
  for cfg in ${NCU_ATTN_CFGS:-X=1}; do
    n=$((n + 1))
    say "ncu: decode attention kernels, $cfg"
    env ${cfg//+/ } timeout 200 ncu --clock-control none --csv --metrics gpu__time_duration.sum,dram__bytes_read.sum \
      -k regex:'DecodeMma|CombineSplits|AppendKv' --launch-skip "${NCU_ATTN_SKIP:-900}" --launch-count 600 \
      "$build/engine/engine_bench" --checkpoint "$work/ckpt" --backend cuda --chunk 8192 --prefill "" \
      --decode_tokens 3 --reps 1 --decode_ctx 32768 --batch 8 >"$out/ncu_attn_$n.csv" 2>/dev/null
    python3 bench/engine_gpu/ncu_summary.py /dev/null "$out/ncu_attn_$n.csv" 2>&1 | tail -n +2 | tee -a "$log"
  done
fi
if has ncudetail; then
  # Where one decode attention launch of each head size spends its time (stalls, throughput).
  bench_args=(--checkpoint "$work/ckpt" --backend cuda --chunk 8192 --prefill "" --decode_tokens 3 --reps 1)
  timeout 200 ncu --clock-control none --section SpeedOfLight --section WarpStateStats --section LaunchStats \
    --section MemoryWorkloadAnalysis --section Occupancy -k regex:'DecodeMma' \
    --launch-skip "${NCU_DETAIL_SKIP:-40}" --launch-count "${NCU_DETAIL_COUNT:-10}" "$build/engine/engine_bench" \
    "${bench_args[@]}" --decode_ctx 32768 --batch "${NCU_DETAIL_BATCH:-0}" >"$out/ncu_detail.txt" 2>&1
  grep -E "DecodeMma|Duration|Throughput|Stall|stall|Warp Cycles|Achieved Occupancy|Registers|Eligible|Issued|Hit Rate|Busy" \
    "$out/ncu_detail.txt" | head -"${NCU_DETAIL_LINES:-80}" | tee -a "$log"
fi
if has long; then
  say "262144-token context"
  timeout "${LONG_TIMEOUT:-150}" "$dump" --checkpoint "$work/ckpt" --inputs text:262144 --out "$work/long" \
    --backend cuda --chunk 8192 --all_logits 0 2>&1 | tee -a "$log"
fi
if has peer; then
  say "transformers peer"
  PYTHONUNBUFFERED=1 timeout "${PEER_TIMEOUT:-200}" python3 bench/engine_gpu/peer_transformers.py "$out/peer.txt" \
    --lengths 32768,65536 --checkpoint "$work/ckpt" 2>&1 | grep -v Warning | tee -a "$log"
fi
say "done"
