#!/usr/bin/env bash
# Ingest benchmark: avserve_ingest_tool vs the ffmpeg CLI doing the same job in the same run
# (1 fps frames on screen at t = k, scaled to the budget-70 size, raw RGB; soundtrack to 16 kHz
# mono f32le), on the 10-minute 720p lecture and the 5-minute 1080p clip (generated on first use).
# Usage: bench/ingest.sh [BUILD_DIR=build] [RUNS=3]
# Env: FILES="lecture720.mp4 clip1080.mp4" (default) picks the media; LONG=1 also measures peak RSS
# on a 60-minute 1080p file in exact mode: a 1-minute 1080p 5 fps clip with AAC, concatenated 60
# times with -c copy into $TMPDIR (cheap to make and to decode; memory depends on the duration).
# Per run it also times exact mode without skipping (--no-skip) and without the conversion worker
# (--no-worker), to show what each buys.
# Last line: ingest speedup_vs_ffmpeg_cli=<median, exact> keyframe_speedup=<median, keyframe>
#            realtime_factor=<media s per wall s, exact> peak_rss_mb=<max over our runs>
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:-$ROOT/build}"
RUNS="${2:-3}"
TOOL="$BUILD/ingest/avserve_ingest_tool"
OUT="$ROOT/samples/out"
[[ -x "$TOOL" ]] || { echo "missing $TOOL (cmake --build $BUILD --target avserve_ingest_tool)" >&2; exit 1; }
"$ROOT/samples/make_samples.sh" "$OUT" ${FILES:-lecture720.mp4 lecture720_truth.csv clip1080.mp4}

median() { tr ' ' '\n' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# Runs a command under GNU time; prints "wall_s cpu_s peak_rss_mb".
measure() {
  local log; log=$(mktemp)
  /usr/bin/time -f "%e %U %S %M" -o "$log" "$@" > /dev/null 2>&1 || { echo "failed: $*" >&2; rm -f "$log"; return 1; }
  awk '{printf "%s %.3f %.1f\n", $1, $2 + $3, $4 / 1024}' "$log"; rm -f "$log"
}
ours() { measure "$TOOL" run --quiet "$@"; }
cli() {  # file W H: the same job with the ffmpeg CLI
  measure ffmpeg -v error -nostdin -i "$1" -map 0:v:0 -vf "fps=1:round=up,scale=$2:$3" -pix_fmt rgb24 -f rawvideo \
    -y /dev/null -map 0:a:0 -ac 1 -ar 16000 -f f32le -y /dev/null
}

exact_ratios=() key_ratios=() cpu_ratios=() skip_gain=() worker_gain=() realtime=() peak=0
for name in ${FILES:-lecture720.mp4 clip1080.mp4}; do
  file="$OUT/$name"
  duration=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$file")
  target=$("$TOOL" probe "$file" | grep '^target budget=70 ')
  h=$(echo "$target" | sed 's/.*height=\([0-9]*\).*/\1/') w=$(echo "$target" | sed 's/.*width=\([0-9]*\).*/\1/')
  for ((r = 0; r < RUNS; ++r)); do
    read -r t_cli c_cli _ < <(cli "$file" "$w" "$h")
    read -r t_exact c_exact rss < <(ours "$file")
    read -r t_noskip c_noskip _ < <(ours "$file" --no-skip)
    read -r t_nowork c_nowork _ < <(ours "$file" --no-worker)
    read -r t_key c_key rss_key < <(ours "$file" --mode keyframe)
    exact_ratios+=("$(echo "$t_cli / $t_exact" | bc -l)")
    key_ratios+=("$(echo "$t_cli / $t_key" | bc -l)")
    cpu_ratios+=("$(echo "$c_cli / $c_exact" | bc -l)")
    skip_gain+=("$(echo "$c_noskip / $c_exact" | bc -l)")
    worker_gain+=("$(echo "$t_nowork / $t_exact" | bc -l)")
    realtime+=("$(echo "$duration / $t_exact" | bc -l)")
    peak=$(echo "$peak $rss $rss_key" | tr ' ' '\n' | sort -g | tail -1)
    printf '%s run %d (wall/cpu s): cli %.1f/%.1f exact %.1f/%.1f no-skip %.1f/%.1f no-worker %.1f/%.1f keyframe %.1f/%.1f rss %s MB load %s\n' \
      "$name" "$r" "$t_cli" "$c_cli" "$t_exact" "$c_exact" "$t_noskip" "$c_noskip" "$t_nowork" "$c_nowork" "$t_key" "$c_key" \
      "$rss" "$(cut -d' ' -f1 /proc/loadavg)"
  done
done
if [[ "${LONG:-0}" == 1 ]]; then
  long="${TMPDIR:-/tmp}/avserve_1080p5_60min.mp4"
  if [[ ! -s "$long" ]]; then
    piece="${TMPDIR:-/tmp}/avserve_1080p5_1min.mp4" list=$(mktemp)
    ffmpeg -v error -nostdin -f lavfi -i "testsrc2=s=1920x1080:r=5:d=60" -f lavfi -i "sine=f=330:r=48000:d=60" \
      -c:v libx264 -preset veryfast -crf 23 -pix_fmt yuv420p -c:a aac -b:a 96k -f mp4 -y "$piece"
    for ((i = 0; i < 60; ++i)); do echo "file '$piece'" >> "$list"; done
    ffmpeg -v error -nostdin -f concat -safe 0 -i "$list" -c copy -y "$long.tmp.mp4" && mv "$long.tmp.mp4" "$long"
    rm -f "$list" "$piece"
  fi
  read -r t_long _ rss_long < <(ours "$long")
  printf 'clip1080_60min.mp4: exact %.1fs peak_rss %s MB\n' "$t_long" "$rss_long"
  peak=$(echo "$peak $rss_long" | tr ' ' '\n' | sort -g | tail -1)
fi
printf 'cpu-time ratios (cli/exact, median): %.2f; skipping disposable frames saves (no-skip/exact cpu, median): %.2fx; conversion worker (no-worker/exact wall, median): %.2fx\n' \
  "$(echo "${cpu_ratios[@]}" | median)" "$(echo "${skip_gain[@]}" | median)" "$(echo "${worker_gain[@]}" | median)"
printf 'ingest speedup_vs_ffmpeg_cli=%.2f keyframe_speedup=%.2f realtime_factor=%.1f peak_rss_mb=%.0f\n' \
  "$(echo "${exact_ratios[@]}" | median)" "$(echo "${key_ratios[@]}" | median)" \
  "$(echo "${realtime[@]}" | median)" "$peak"
