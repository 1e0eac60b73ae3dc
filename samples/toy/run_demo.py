#!/usr/bin/env python3
"""The README's demo: a fresh toy video, avserve watching and listening to it, answers next to the truth.

  /usr/bin/python3 samples/toy/run_demo.py [--build-dir build] [--seed N] [--seconds 10]

1. samples/toy/make_sample.py renders a new clip (shapes that appear and move; words spoken by
   espeak-ng; one beep) into samples/out/toy_demo.mp4, with its truth in toy_demo.json.
2. avserve starts on 127.0.0.1 (ephemeral port) with the toy checkpoint deploy/toy-model on the CPU.
3. avctl uploads the clip and asks two questions of each kind: vision only, audio only, and
   questions that need both at the same moment. Answers are printed next to the truth.
4. The server is stopped.
Without a built server (build incomplete) it shows what avserve's ingest sees instead.
"""
import argparse
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import avclient  # noqa: E402
import make_sample  # noqa: E402
import toyworld as tw  # noqa: E402

KIND = {"vision": "vision only", "audio": "audio only", "av": "audio + vision"}


def describe(truth):
    s = tw.Scene.from_json(truth["scene"])
    print(f"the clip ({s.seconds} s), second by second:")
    for k in range(s.seconds):
        seen = f"{s.colour[k]} {tw.SHAPES[s.kind[k] - 1]}" if s.kind[k] else "-"
        heard = f'"{s.sound[k]}"' if s.sound[k] and s.sound[k] != "beep" else s.sound[k] or "-"
        print(f"  {tw.timestamp(k)}  sees {seen:16s} hears {heard}")


def find(build_dir, name):
    for sub in ("service", "ingest", "."):
        p = os.path.join(build_dir, sub, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def ask_server(avserve, avctl, checkpoint, video, truth):
    with tempfile.TemporaryDirectory(prefix="avserve_demo_") as tmp:
        print(f"\nstarting avserve (CPU, {os.path.relpath(checkpoint, ROOT)}) ...", flush=True)
        with avclient.Server(avserve, checkpoint, tmp) as srv:
            print(f"avserve listening on {srv.address}")
            t0 = time.time()
            media_id = avclient.upload(avctl, srv.address, video)
            print(f"avctl upload {os.path.relpath(video, ROOT)} -> {media_id}")
            qs = truth["picked"]
            answers, final = avclient.ask(avctl, srv.address, media_id, [q["question"] for q in qs])
            print(f"avctl ask: {len(qs)} questions in {time.time() - t0:.1f} s\n")
            print(f"{'kind':15s} {'question':54s} {'avserve':9s} {'truth':9s}")
            right = 0
            for q, a in zip(qs, answers):
                ok = avclient.normalize(a) == q["answer"]
                right += ok
                print(f"{KIND[q['category']]:15s} {q['question']:54s} {a.strip():9s} {q['answer']:9s} "
                      f"{'ok' if ok else 'WRONG'}")
            print(f"\n{right}/{len(qs)} correct.")
            print("stopping avserve")
    return 0


def show_ingest(tool, video):
    print("\n(avserve/avctl are not built yet: showing what avserve's ingest makes of the clip)")
    out = subprocess.run([tool, "run", video], capture_output=True, text=True)
    print(out.stdout.strip() or out.stderr.strip())
    return out.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--checkpoint", default=os.path.join(ROOT, "deploy", "toy-model"))
    ap.add_argument("--seed", type=int)
    ap.add_argument("--seconds", type=int, default=10)
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(10 ** 9, 2 * 10 ** 9)
    out_dir = os.path.join(ROOT, "samples", "out")
    os.makedirs(out_dir, exist_ok=True)
    video = os.path.join(out_dir, "toy_demo.mp4")
    truth = make_sample.make(seed, video, os.path.join(out_dir, "toy_demo.json"), a.seconds)
    print(f"generated {os.path.relpath(video, ROOT)} (seed {seed}; truth in toy_demo.json)")
    describe(truth)
    avserve, avctl = find(a.build_dir, "avserve"), find(a.build_dir, "avctl")
    have_model = os.path.isfile(os.path.join(a.checkpoint, "model.safetensors"))
    if avserve and avctl and have_model:
        return ask_server(avserve, avctl, a.checkpoint, video, truth)
    tool = find(a.build_dir, "avserve_ingest_tool")
    if tool:
        return show_ingest(tool, video)
    print(f"nothing built in {a.build_dir}: run scripts/setup first")
    return 1


if __name__ == "__main__":
    sys.exit(main())
