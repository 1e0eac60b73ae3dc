#!/usr/bin/env bash
# Tokenizer encode speed: avserve vs Hugging Face `tokenizers` (npm binding, same machine).
#   bench/tokenizer_bench.sh [build-dir]   (needs node + npm; installs tokenizers@0.23.2 into .cache/)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
tok=.cache/tokenizer-gemma3/tokenizer.json
corpus=tests/data/tokenizer/corpus.bin
[ -s "$tok" ] || bash scripts/fetch_test_data
if [ ! -d .cache/node-tokenizers/node_modules/tokenizers ]; then
  mkdir -p .cache/node-tokenizers
  (cd .cache/node-tokenizers && npm install --silent --no-save tokenizers@0.23.2 >/dev/null)
fi
cmake --build "$build" --target avserve_tokenizer_bench >/dev/null
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
"$build"/pipeline/avserve_tokenizer_bench "$tok" "$corpus" 5
NODE_PATH=.cache/node-tokenizers/node_modules node bench/tokenizer_bench.js "$tok" "$corpus" 5
