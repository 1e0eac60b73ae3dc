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
# WINDOW=1 first times windowed ingest (IngestOptions::window_*; Note [Window] in ingest/media_reader.h)
# on the last 60 s of lecture720.mp4: the reader's seek vs the old way (a full read from the start
# that drops the segments before the window, --filter-window) vs decode-and-discard (--from-memory:
# bytes are never sought), checking that all three give the same fingerprint; then all ten 60 s
# windows in a row (what a chunked summary reads) vs one full read. WINDOW=only stops after that.
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

# Like measure, but the command's stdout goes to the file $1.
measure_to() {
  local out="$1" log; shift; log=$(mktemp)
  /usr/bin/time -f "%e %U %S %M" -o "$log" "$@" > "$out" 2>&1 || { echo "failed: $*" >&2; rm -f "$log"; return 1; }
  awk '{printf "%s %.3f %.1f\n", $1, $2 + $3, $4 / 1024}' "$log"; rm -f "$log"
}
window_bench() {
  local file="$OUT/lecture720.mp4" out; out=$(mktemp)
  "$ROOT/samples/make_samples.sh" "$OUT" lecture720.mp4 lecture720_truth.csv
  local duration; duration=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$file")
  local ws; ws=$(echo "$duration - 60" | bc -l)
  local seeks=() olds=() discards=()
  for ((r = 0; r < RUNS; ++r)); do
    read -r t_seek c_seek rss_seek < <(measure_to "$out" "$TOOL" run --quiet --hash "$file" --window-start "$ws")
    local h_seek; h_seek=$(grep '^hash=' "$out"); local n_seek; n_seek=$(grep -o 'done segments=[0-9]*' "$out" | cut -d' ' -f2)
    local seek_info; seek_info=$(grep -o 'decoded=[0-9]*.*' "$out")
    read -r t_old c_old _ < <(measure_to "$out" "$TOOL" run --quiet --hash "$file" --window-start "$ws" --filter-window)
    local h_old; h_old=$(grep '^hash=' "$out")
    read -r t_dis c_dis _ < <(measure_to "$out" "$TOOL" run --quiet --hash "$file" --window-start "$ws" --from-memory)
    local h_dis; h_dis=$(grep '^hash=' "$out")
    [[ "$h_seek" == "$h_old" && "$h_seek" == "$h_dis" ]] || { echo "window outputs differ: $h_seek $h_old $h_dis" >&2; exit 1; }
    seeks+=("$t_seek") olds+=("$t_old") discards+=("$t_dis")
    printf 'lecture720 last 60 s run %d (wall/cpu s): seek %.2f/%.2f (%s, %s, rss %s MB) from-start %.2f/%.2f decode-and-discard %.2f/%.2f, %s, load %s\n' \
      "$r" "$t_seek" "$c_seek" "$n_seek" "$seek_info" "$rss_seek" "$t_old" "$c_old" "$t_dis" "$c_dis" "$h_seek" \
      "$(cut -d' ' -f1 /proc/loadavg)"
  done
  # Ten consecutive 60 s windows (a chunked summary's reads) vs one full read.
  local total=0 t
  for ((w = 0; w < 10; ++w)); do
    read -r t _ < <(measure "$TOOL" run --quiet "$file" --window-start $((w * 60)) --window-end $(((w + 1) * 60)))
    total=$(echo "$total + $t" | bc -l)
  done
  read -r t_full _ < <(measure "$TOOL" run --quiet "$file")
  printf 'window lecture720_last60s seek_s=%.2f from_start_s=%.2f decode_and_discard_s=%.2f speedup=%.1f; ten_60s_windows_s=%.1f full_read_s=%.1f\n' \
    "$(echo "${seeks[@]}" | median)" "$(echo "${olds[@]}" | median)" "$(echo "${discards[@]}" | median)" \
    "$(echo "$(echo "${olds[@]}" | median) / $(echo "${seeks[@]}" | median)" | bc -l)" "$total" "$t_full"
  rm -f "$out"
}
if [[ "${WINDOW:-0}" != 0 ]]; then
  window_bench
  [[ "$WINDOW" == only ]] && exit 0
fi

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
