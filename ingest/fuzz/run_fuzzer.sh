#!/usr/bin/env bash
# Runs the ingest fuzzer for a bounded time over the committed corpus.
# Usage: ingest/fuzz/run_fuzzer.sh BUILD_DIR [SECONDS=60] [NEW_CORPUS_DIR]
# New inputs go to NEW_CORPUS_DIR (default a temp dir); the committed corpus is only read, so CI
# leaves the tree clean. Exit status is non-zero when the fuzzer finds a crash, leak or timeout.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="${1:?build dir with avserve_ingest_fuzzer}"
SECONDS_TO_RUN="${2:-60}"
NEW="${3:-$(mktemp -d)}"
mkdir -p "$NEW"
exec "$BUILD/ingest/fuzz/avserve_ingest_fuzzer" "$NEW" "$ROOT/tests/data/ingest/fuzz_corpus" \
  -max_total_time="$SECONDS_TO_RUN" -max_len=65536 -timeout=20 -rss_limit_mb=2048 -print_final_stats=1
