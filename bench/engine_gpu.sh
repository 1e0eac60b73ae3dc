#!/usr/bin/env bash
# Issue #6's benchmark: avserve's engine (the real loader and model path, CUDA backend) against transformers
# 5.17 (sdpa) on the SAME 12B-shape checkpoint (random bf16 weights, written by bench/engine_gpu/parity_12b.py
# make) and the same card, in one run. On the GPU machine from the repository root, .devdeps carried:
#   bench/engine_gpu.sh                 checkpoint (if missing), GPU tests, 8K parity, engine, peer, 262K context
#   STEPS="bench peer" bench/engine_gpu.sh   only the timings
# Logs go to $OUT (all.log). Prints a table, then as its last line
#   engine prefill32k_s=<s> prefill64k_s=<s> decode_ms=<ms> speedup_prefill32k=<x> speedup_decode=<x> card=<name>
# The op-level microbenchmark of session 1 is bench/engine_gpu/engine_gpu_bench (kernels alone, no engine).
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-/tmp/engine_gpu}
STEPS=${STEPS:-tests parity bench peer long} bash bench/engine_gpu/device_run.sh
python3 - "$OUT/all.log" "$OUT/peer.txt" <<'PY'
import re
import sys

log = open(sys.argv[1]).read()
card = log.splitlines()[0].split(",")[0].strip()
eng = dict(re.findall(r"(\w+)=([\d.]+)", (re.findall(r"^engine_bench .*$", log, re.M) or [""])[0]))
try:
    peer = dict(re.findall(r"(\w+)=([\d.]+)", open(sys.argv[2]).read()))
except OSError:
    peer = {}
# Floors on an H200 (issue #6, design.md §4-5): FLOPs at ~790 TFLOP/s, bytes at ~4.3 TB/s; 8 questions add 7
# more KV caches of 0.85 GB each to the weights.
rows = [("prefill 32K tokens (s)", "prefill_32768_s", "prefill32k_s", 1.2, 1.8),
        ("prefill 64K tokens (s)", "prefill_65536_s", "prefill64k_s", 2.8, 4.0),
        ("decode at 32K, ms/token", "decode_32768_ms", "decode_ms", 5.6, 7.0),
        ("8 questions on one 32K prefix, ms/step", "batch8_32768_step_ms", None, 7.0, 9.0)]
print("| metric | avserve | transformers | speedup | floor | avserve / floor | target |")
print("|---|---|---|---|---|---|---|")
out = {}
for name, ek, pk, floor, target in rows:
    a = float(eng[ek]) if ek in eng else None
    b = float(peer[pk]) if pk and pk in peer else None
    sp = b / a if a and b else None
    out[ek] = (a, sp)
    f = lambda v, fmt="%.3f": fmt % v if v is not None else "-"
    print("| %s | %s | %s | %s | %s | %s | %s |" % (name, f(a), f(b), f(sp, "%.1fx"), floor,
                                                   f(a / floor if a else None, "%.2fx"), target))
g = lambda k, i: ("%.3f" % out[k][i]) if out.get(k, (None, None))[i] is not None else "nan"
print("engine prefill32k_s=%s prefill64k_s=%s decode_ms=%s speedup_prefill32k=%s speedup_decode=%s card=%s"
      % (g("prefill_32768_s", 0), g("prefill_65536_s", 0), g("decode_32768_ms", 0), g("prefill_32768_s", 1),
         g("decode_32768_ms", 1), card.replace(" ", "_")))
PY
