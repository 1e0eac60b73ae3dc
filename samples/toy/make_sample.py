#!/usr/bin/env python3
"""Generates a toy demo video (H.264 + AAC in MP4, 384x384, 10 fps, 16 kHz mono) and its truth.

  /usr/bin/python3 samples/toy/make_sample.py --seed 7 --out clip.mp4 [--truth clip.json]
      [--seconds 10] [--shift-audio 3] [--shuffle-frames] [--per-category 2]

The scene (shapes, words, beep) comes from toyworld.sample_scene(seed); words are spoken by
espeak-ng here. The truth file holds the scene, every well-defined question with its answer, and
a balanced pick of questions (--per-category of each category) for demos and tests.
Perturbations for the alignment test (the truth stays that of the aligned scene):
  --shift-audio S     the soundtrack is delayed by S whole seconds (its tail is cut)
  --shuffle-frames    second k shows the picture of second perm[k] (a permutation without fixed points)
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toyworld as tw  # noqa: E402

FPS = 10


def derangement(rng, n):
    while True:
        p = rng.permutation(n)
        if np.all(p != np.arange(n)):
            return [int(v) for v in p]


def render_video_frames(scene, order):
    yy, xx = tw.pixel_grid(np)
    img = tw.render_frames(tw.scene_arrays(scene, order), yy, xx, np.floor)   # [L, H, W, 3]
    return np.rint(img * 255.0).astype(np.uint8)


def encode(path, frames, audio, seconds):
    """frames [L, H, W, 3] uint8 (one per second, held for FPS frames), audio float32 16 kHz."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "a.f32")
        audio.astype("<f4").tofile(wav)
        side = tw.FRAME_SIDE
        cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{side}x{side}", "-r", str(FPS), "-i", "pipe:0",
               "-f", "f32le", "-ar", str(tw.SAMPLE_RATE), "-ac", "1", "-i", wav,
               "-map", "0:v", "-map", "1:a", "-t", str(seconds),
               "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-g", str(2 * FPS),
               "-c:a", "aac", "-b:a", "96k", "-ar", str(tw.SAMPLE_RATE), "-ac", "1",
               "-movflags", "+faststart", path]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
        for f in frames:
            data = f.tobytes()
            for _ in range(FPS):
                proc.stdin.write(data)
        proc.stdin.close()
        if proc.wait() != 0:
            raise SystemExit(f"make_sample: ffmpeg failed for {path}")


def make(seed, out, truth_path=None, seconds=None, shift_audio=0, shuffle=False, per_category=2, bank=None):
    rng = np.random.default_rng(seed)
    scene = tw.sample_scene(rng, seconds)
    order = derangement(np.random.default_rng(seed + 7919), scene.seconds) if shuffle else list(range(scene.seconds))
    if bank is None:   # speak only the words this clip needs
        bank = tw.WordBank({(w, v): tw.speak(w, *tw.VOICES[v])
                            for w, v in zip(scene.sound, scene.voice) if w and w != "beep"})
    audio = tw.render_audio(scene, bank, np.random.default_rng(seed + 104729), shift_s=shift_audio)
    encode(out, render_video_frames(scene, order), audio, scene.seconds)
    truth = {"seed": seed, "video": os.path.basename(out), "seconds": scene.seconds,
             "audio_shift_s": shift_audio, "frame_order": order, "scene": scene.to_json(),
             "questions": tw.questions(scene),
             "picked": tw.pick_questions(scene, np.random.default_rng(seed + 31), per_category)}
    if truth_path:
        tw.write_json(truth_path, truth)
    return truth


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--truth")
    ap.add_argument("--seconds", type=int)
    ap.add_argument("--shift-audio", type=int, default=0)
    ap.add_argument("--shuffle-frames", action="store_true")
    ap.add_argument("--per-category", type=int, default=2)
    a = ap.parse_args()
    if a.seconds is not None and not tw.MIN_SECONDS <= a.seconds <= 59:
        ap.error(f"--seconds must be in [{tw.MIN_SECONDS}, 59]")
    t = make(a.seed, a.out, a.truth, a.seconds, a.shift_audio, a.shuffle_frames, a.per_category)
    print(f"{a.out}: {t['seconds']} s, {len(t['questions'])} questions")


if __name__ == "__main__":
    main()
