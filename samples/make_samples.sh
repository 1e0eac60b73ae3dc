#!/usr/bin/env bash
# Generates avserve's test media deterministically with Debian's ffmpeg (and espeak-ng for the
# lecture). Usage: samples/make_samples.sh [OUT_DIR] [NAME...]   (default OUT_DIR samples/out,
# default names: every small test file). Existing files are kept; each file is written to a
# temporary name and renamed, so concurrent callers are safe. Bench media (lecture720.mp4 with
# lecture720_truth.csv, clip1080.mp4) are generated only when named.
#
# Test videos encode their own presentation time: 16 vertical bars of 12 px (192 px wide), bar b
# white when bit b of round(T * 100) is set (T = the frame's pts in seconds).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${1:-$HERE/out}"
shift || true
mkdir -p "$OUT"
FF=(ffmpeg -hide_banner -loglevel error -nostdin -y)
X264=(-c:v libx264 -preset medium -crf 12 -pix_fmt yuv420p -x264-params bframes=3:b-pyramid=normal:keyint=50)
BITS="geq=lum='255*mod(floor(round(T*100)/pow(2\,floor(X/12)))\,2)':cb=128:cr=128"
SMALL=(cfr25.mp4 cfr30.mp4 cfr60.mp4 vfr.mp4 offset.mp4 offset.ts rotated.mp4 audio_only.m4a
       tone44k.wav tone48k.mkv tone48k_aac.mp4 truncated.mp4 corrupt.mp4 corrupt.ts vp9.webm hevc.mp4 av1.mkv
       huge.y4m random.bin empty.bin nostreams.srt unsupported.avi long_duration.mp4 w426.mp4)

timed_video() {  # rate duration -> lavfi graph of a 192x96 clip whose frames encode their time
  echo "color=black:s=192x96:r=$1:d=$2,format=yuv420p,$BITS"
}
tone_bursts() {  # rate -> stereo lavfi source, 1 kHz bursts at [1.0,1.2) and [3.0,3.2) s
  local e="0.5*sin(2*PI*1000*t)*(between(t\,1.0\,1.2-1e-9)+between(t\,3.0\,3.2-1e-9))"
  echo "aevalsrc=$e|$e:s=$1:d=5"
}

make_one() {
  local name="$1" dst="$OUT/$1" tmp
  [[ -s "$dst" || ( "$1" == empty.bin && -e "$dst" ) ]] && return 0
  tmp="$OUT/.tmp.$$.$name"
  case "$name" in
    cfr25.mp4) "${FF[@]}" -f lavfi -i "$(timed_video 25 6.5)" -f lavfi -i "sine=f=440:r=48000:d=6.5" \
                 "${X264[@]}" -c:a aac -b:a 64k -f mp4 "$tmp" ;;
    cfr30.mp4) "${FF[@]}" -f lavfi -i "$(timed_video 30 5.3)" "${X264[@]}" -f mp4 "$tmp" ;;
    cfr60.mp4) "${FF[@]}" -f lavfi -i "$(timed_video 60 4.2)" "${X264[@]}" -f mp4 "$tmp" ;;
    vfr.mp4)   # irregular frame times: pts_n = (1.2 n + 0.2 ((7 n) mod 5)) / 20 s
      "${FF[@]}" -f lavfi -i "color=black:s=192x96:r=20:d=5,format=yuv420p,settb=1/1000,setpts='(1.2*N+0.2*mod(7*N\,5))/20/TB',$BITS" \
        "${X264[@]}" -fps_mode vfr -video_track_timescale 1000 -f mp4 "$tmp" ;;
    offset.mp4)  # video starts 0.5 s after the audio
      "${FF[@]}" -itsoffset 0.5 -f lavfi -i "$(timed_video 25 4)" -f lavfi -i "sine=f=440:r=44100:d=5" \
        "${X264[@]}" -fps_mode vfr -c:a aac -b:a 64k -f mp4 "$tmp" ;;
    offset.ts) "${FF[@]}" -f lavfi -i "$(timed_video 25 4.5)" -f lavfi -i "sine=f=440:r=48000:d=4.5" \
                 "${X264[@]}" -c:a aac -b:a 64k -f mpegts "$tmp" ;;
    w426.mp4)  # 240p at 426 px: a width that swscale's SIMD rows overrun (not a multiple of its block)
      "${FF[@]}" -f lavfi -i "testsrc=s=426x240:r=25:d=3" -f lavfi -i "sine=f=440:r=48000:d=3" \
        "${X264[@]}" -c:a aac -b:a 64k -f mp4 "$tmp" ;;
    rotated.mp4)  # a phone video: stored 192x96, tkhd matrix says rotate 90 degrees clockwise
      "${FF[@]}" -f lavfi -i "$(timed_video 25 3)" "${X264[@]}" -f mp4 "$tmp.src"
      /usr/bin/python3 - "$tmp.src" "$tmp" <<'PY'
import struct, sys
d = bytearray(open(sys.argv[1], 'rb').read())
i = d.find(b'tkhd')  # version 0: the matrix starts 40 bytes after the version/flags word
assert d[i + 4] == 0
struct.pack_into('>9i', d, i + 4 + 40, 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)
open(sys.argv[2], 'wb').write(d)
PY
      rm -f "$tmp.src" ;;
    audio_only.m4a) "${FF[@]}" -f lavfi -i "$(tone_bursts 44100)" -c:a aac -b:a 96k -f mp4 "$tmp" ;;
    tone44k.wav) "${FF[@]}" -f lavfi -i "$(tone_bursts 44100)" -c:a pcm_s16le -f wav "$tmp" ;;
    tone48k.mkv) "${FF[@]}" -f lavfi -i "$(tone_bursts 48000)" -c:a flac -f matroska "$tmp" ;;
    tone48k_aac.mp4) "${FF[@]}" -f lavfi -i "$(timed_video 25 5)" -f lavfi -i "$(tone_bursts 48000)" \
                       "${X264[@]}" -c:a aac -b:a 96k -f mp4 "$tmp" ;;
    truncated.mp4) make_one cfr25.mp4
      "${FF[@]}" -i "$OUT/cfr25.mp4" -c copy -movflags +faststart -f mp4 "$tmp.full"
      head -c $(( $(stat -c %s "$tmp.full") / 2 )) "$tmp.full" > "$tmp"; rm -f "$tmp.full" ;;
    corrupt.ts) make_one offset.ts; cp "$OUT/offset.ts" "$tmp"
      /usr/bin/python3 -c "import random,sys; f=open(sys.argv[1],'r+b'); n=f.seek(0,2); r=random.Random(7); f.seek(n//2); f.write(bytes(r.randrange(256) for _ in range(30000)))" "$tmp" ;;
    corrupt.mp4) make_one cfr30.mp4; cp "$OUT/cfr30.mp4" "$tmp"  # garbage inside the mdat, index intact
      /usr/bin/python3 -c "import random,sys; f=open(sys.argv[1],'r+b'); n=f.seek(0,2); r=random.Random(5); f.seek(n//2); f.write(bytes(r.randrange(256) for _ in range(2000)))" "$tmp" ;;
    vp9.webm) "${FF[@]}" -f lavfi -i "$(timed_video 25 3)" -f lavfi -i "sine=f=440:r=48000:d=3" \
                -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 500k -c:a libopus -f webm "$tmp" ;;
    hevc.mp4) "${FF[@]}" -f lavfi -i "$(timed_video 25 3)" -c:v libx265 -preset ultrafast -crf 12 \
                -x265-params log-level=error:bframes=3 -tag:v hvc1 -f mp4 "$tmp" ;;
    av1.mkv) "${FF[@]}" -f lavfi -i "$(timed_video 25 3)" -c:v libaom-av1 -cpu-used 8 -crf 20 -f matroska "$tmp" ;;
    huge.y4m) { printf 'YUV4MPEG2 W30000 H30000 F25:1 Ip A1:1 C420jpeg\nFRAME\n'; head -c 4096 /dev/zero; } > "$tmp" ;;
    random.bin) /usr/bin/python3 -c "import random,sys; r=random.Random(3); sys.stdout.buffer.write(bytes(r.randrange(256) for _ in range(65536)))" > "$tmp" ;;
    empty.bin) : > "$tmp" ;;
    nostreams.srt) printf '1\n00:00:00,000 --> 00:00:01,000\nhello\n\n' > "$tmp" ;;
    unsupported.avi)  # MPEG-4 in AVI with its FourCC replaced by one no decoder knows
      "${FF[@]}" -f lavfi -i "$(timed_video 25 1)" -c:v mpeg4 -f avi "$tmp.src"
      /usr/bin/python3 -c "import sys; d=open(sys.argv[1],'rb').read().replace(b'FMP4',b'QQZZ'); open(sys.argv[2],'wb').write(d)" "$tmp.src" "$tmp"
      rm -f "$tmp.src" ;;
    long_duration.mp4) make_one cfr30.mp4  # mvhd/mdhd durations claim about 49 days
      /usr/bin/python3 - "$OUT/cfr30.mp4" "$tmp" <<'PY'
import struct, sys
d = bytearray(open(sys.argv[1], 'rb').read())
for box in (b'mvhd', b'mdhd', b'tkhd'):
    i = d.find(box)
    while i >= 0:
        if d[i + 4] == 0:  # version 0: duration is a 32-bit field
            off = i + 4 + 4 + 4 + 4 + (4 if box != b'tkhd' else 8)
            struct.pack_into('>I', d, off, 0xFFFFFFF0)
        i = d.find(box, i + 4)
open(sys.argv[2], 'wb').write(d)
PY
      ;;
    lecture720.mp4|lecture720_truth.csv) make_lecture; return 0 ;;
    clip1080.mp4) "${FF[@]}" -f lavfi -i "testsrc2=s=1920x1080:r=30:d=300" -f lavfi -i "sine=f=330:r=48000:d=300" \
                    -c:v libx264 -preset veryfast -crf 23 -pix_fmt yuv420p -c:a aac -b:a 96k -f mp4 "$tmp" ;;
    *) echo "unknown sample: $name" >&2; return 2 ;;
  esac
  mv -f "$tmp" "$dst"
}

# 10-minute 720p "lecture": a slide whose text changes every 20 s and a sentence spoken by
# espeak-ng 2 s into every slide. The truth CSV lists kind,start_s,end_s,text.
make_lecture() {
  local dst="$OUT/lecture720.mp4" csv="$OUT/lecture720_truth.csv" work="$OUT/.lecture.$$"
  [[ -s "$dst" && -s "$csv" ]] && return 0
  mkdir -p "$work"
  local font=/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf filters="" inputs=() mix="" n=30
  echo "kind,start_s,end_s,text" > "$work/truth.csv"
  for ((i = 0; i < n; ++i)); do
    local start=$((i * 20)) text="Slide $((i + 1)) - topic number $((i * 7 % 30 + 1))"
    local sentence="This is slide $((i + 1)). The key number is $((i * 13 % 97))."
    filters+="drawtext=fontfile=$font:fontsize=56:fontcolor=white:x=80:y=300:text='$text':enable='between(t\\,$start\\,$((start + 20)))',"
    espeak-ng -v en -s 150 -w "$work/s$i.wav" "$sentence"
    local len; len=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$work/s$i.wav")
    echo "slide,$start,$((start + 20)),$text" >> "$work/truth.csv"
    echo "speech,$((start + 2)),$(/usr/bin/python3 -c "print(round($start + 2 + $len, 3))"),$sentence" >> "$work/truth.csv"
    inputs+=(-i "$work/s$i.wav")
    mix+="[$((i + 1)):a]adelay=$(((start + 2) * 1000))|$(((start + 2) * 1000))[a$i];"
  done
  local labels=""; for ((i = 0; i < n; ++i)); do labels+="[a$i]"; done
  "${FF[@]}" -f lavfi -i "color=c=0x203050:s=1280x720:r=30:d=600,${filters%,}" "${inputs[@]}" \
    -filter_complex "${mix}${labels}amix=inputs=$n:normalize=0,apad=whole_dur=600,aresample=48000[aout]" \
    -map 0:v -map "[aout]" -t 600 -c:v libx264 -preset veryfast -crf 23 -pix_fmt yuv420p \
    -c:a aac -b:a 96k -f mp4 "$work/out.mp4"
  mv -f "$work/truth.csv" "$csv"; mv -f "$work/out.mp4" "$dst"; rm -rf "$work"
}

if [[ $# -eq 0 ]]; then set -- "${SMALL[@]}"; fi
for name in "$@"; do make_one "$name"; done
