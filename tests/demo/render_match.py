#!/usr/bin/env python3
"""Shows that the trainer's direct renderer reproduces what avserve ingests from the encoded video.

For a few seeds: render the scene with toyworld (what the trainer sees), encode it with
samples/toy/make_sample.py (H.264 crf 18 4:2:0 + AAC 96k, as the demo and the e2e test do), decode
it the way avserve does (1 sample per second, the frame on screen at t = k s; 16 kHz mono), and
compare. Decoder: `avserve_ingest_tool` when given (--ingest-tool), else the ffmpeg CLI
(`fps=1:round=up`, the oracle design.md 2 names for the same frames).

Tolerances (codec noise, measured on these clips and kept with margin):
  video: mean |pixel difference| <= 0.02 (5/255); 99th percentile <= 0.12 (chroma subsampling at
         shape edges); the shape's colour in its interior within 0.04 per channel.
  audio: SNR of the decoded soundtrack against the rendered one >= 15 dB at the best lag,
         |lag| <= 2 ms (AAC priming is removed by the mp4 edit list).
The trainer adds Gaussian pixel noise (sigma 0.02), 4:2:0 chroma blur and audio low-pass/noise of
at least these sizes, so the model does not depend on the exact values.
  /usr/bin/python3 tests/demo/render_match.py [--ingest-tool build/.../avserve_ingest_tool] [--seeds 3]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "samples", "toy"))
import make_sample  # noqa: E402
import toyworld as tw  # noqa: E402


def decode_ffmpeg(path, seconds):
    side = tw.FRAME_SIDE
    raw = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", path, "-vf", "fps=1:round=up",
                          "-frames:v", str(seconds), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
                         check=True, capture_output=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, side, side, 3).astype(np.float32) / 255.0
    pcm = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", path, "-vn", "-ac", "1", "-ar",
                          str(tw.SAMPLE_RATE), "-f", "f32le", "pipe:1"], check=True, capture_output=True).stdout
    return tw.patchify(frames), np.frombuffer(pcm, "<f4")


def decode_ingest_tool(tool, path, tmp):
    """avserve's ingest (ingest/tools/ingest_main.cc): segment_<k>_patches.f32 [64, 6912] and
    segment_<k>_audio.f32 [25, 640] per second."""
    dump = os.path.join(tmp, "dump_" + os.path.basename(path))
    os.makedirs(dump, exist_ok=True)
    subprocess.run([tool, "run", path, "--dump", dump, "--quiet"], check=True, capture_output=True)
    n = len([f for f in os.listdir(dump) if f.endswith("_patches.f32")])
    patches = np.stack([np.fromfile(os.path.join(dump, f"segment_{k}_patches.f32"), "<f4") for k in range(n)])
    audio = np.concatenate([np.fromfile(os.path.join(dump, f"segment_{k}_audio.f32"), "<f4") for k in range(n)])
    return patches.reshape(n, tw.NUM_PATCHES, tw.PATCH_DIM), audio


def best_lag_snr(ref, got, max_lag=160):
    n = min(len(ref), len(got)) - 2 * max_lag
    best = None
    for lag in range(-max_lag, max_lag + 1, 4):
        a = ref[max_lag:max_lag + n]
        b = got[max_lag + lag:max_lag + lag + n]
        snr = 10 * np.log10(np.sum(a * a) / max(np.sum((a - b) ** 2), 1e-12))
        if best is None or snr > best[1]:
            best = (lag, snr)
    return best


def check(seed, tool, tmp):
    path = os.path.join(tmp, f"s{seed}.mp4")
    truth = make_sample.make(seed, path)
    scene = tw.Scene.from_json(truth["scene"])
    yy, xx = tw.pixel_grid(np)
    want = tw.patchify(tw.render_frames(tw.scene_arrays(scene), yy, xx, np.floor)).astype(np.float32)
    bank = tw.WordBank({(w, v): tw.speak(w, *tw.VOICES[v]) for w, v in zip(scene.sound, scene.voice)
                        if w and w != "beep"})
    want_audio = tw.render_audio(scene, bank, np.random.default_rng(seed + 104729))
    patches, audio = decode_ingest_tool(tool, path, tmp) if tool else decode_ffmpeg(path, scene.seconds)
    assert patches.shape == want.shape, (patches.shape, want.shape)
    d = np.abs(patches - want)
    mean, p99 = float(d.mean()), float(np.percentile(d, 99))
    # Interior colour: pixels at least 6 px inside the shape.
    worst_col = 0.0
    for k in range(scene.seconds):
        if not scene.kind[k]:
            continue
        a = {key: v[k:k + 1] for key, v in tw.scene_arrays(scene).items()}
        a["radius"] = a["radius"] - 6
        inner = tw.render_frames(a, yy, xx, np.floor)[0]
        mask = np.all(np.abs(inner - np.array(tw.COLOURS[scene.colour[k]])) < 0.01, axis=-1)
        frame = patches[k].reshape(tw.GRID, tw.GRID, tw.PATCH_SIDE, tw.PATCH_SIDE, 3).transpose(0, 2, 1, 3, 4)
        frame = frame.reshape(tw.FRAME_SIDE, tw.FRAME_SIDE, 3)
        worst_col = max(worst_col, float(np.abs(frame[mask].mean(0) - np.array(tw.COLOURS[scene.colour[k]])).max()))
    lag, snr = best_lag_snr(want_audio, audio)
    ok = mean <= 0.02 and p99 <= 0.12 and worst_col <= 0.04 and snr >= 15 and abs(lag) <= 32
    print(f"seed {seed}: video mean|d| {mean:.4f} p99 {p99:.4f} max {float(d.max()):.3f} interior colour err "
          f"{worst_col:.4f}; audio {len(audio)}/{len(want_audio)} samples, lag {lag}, SNR {snr:.1f} dB "
          f"-> {'ok' if ok else 'FAIL'}")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ingest-tool")
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [check(1000 + s, a.ingest_tool, tmp) for s in range(a.seeds)]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
