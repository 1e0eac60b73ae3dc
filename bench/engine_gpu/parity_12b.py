#!/usr/bin/env python3
"""Logit parity of avserve's engine with transformers 5.17 at the real Gemma 4 12B shape (issue #6).

On the GPU machine (torch + transformers there), from the repository root (bench/engine_gpu/device_run.sh runs
all three steps):
  python3 bench/engine_gpu/parity_12b.py make WORK [--tokens 8192]
      random bf16 weights at the 12B shape -> WORK/ckpt (ONE model.safetensors + config.json as
      Gemma4UnifiedConfig.save_pretrained writes it), an ~8K-token prompt of text, video frames (48x48 patches)
      and audio frames -> WORK/inputs, and transformers' (sdpa, bf16) top-1 of every position and logits of
      every 64th position -> WORK/hf
  logits_dump --checkpoint WORK/ckpt --inputs WORK/inputs --out WORK/engine     (bench/engine_gpu/logits_dump.cc)
  python3 bench/engine_gpu/parity_12b.py compare WORK
      prints the worst and mean relative error (L2 per position) and the top-1 agreement; exit status 1 when
      rel err > 2e-2 or agreement < 99%.
Here (numpy only), `golden WORK` writes the tiny checkpoint's golden prompt p1 in the same input format and
`compare WORK --hf tests/data/engine/golden` checks logits_dump against the goldens: the harness's self-test.

`golden` + `compare` run here against logits_dump on the CPU backend; `make` runs on the H200 (session 4 onward).
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PATCH_DIM = 6912


def write_inputs(d, ids, types, vision_u8, xy, audio):
    os.makedirs(d, exist_ok=True)
    np.asarray(ids, np.int32).tofile(os.path.join(d, "ids.i32"))
    np.asarray(types, np.int32).tofile(os.path.join(d, "types.i32"))
    np.asarray(vision_u8, np.uint8).reshape(-1, PATCH_DIM).tofile(os.path.join(d, "vision_u8.bin"))
    np.asarray(xy, np.int32).reshape(-1, 2).tofile(os.path.join(d, "vision_xy.i32"))
    np.asarray(audio, np.float32).reshape(-1, 640).tofile(os.path.join(d, "audio_f32.bin"))


def golden(work):
    g = os.path.join(ROOT, "tests/data/engine/golden")
    meta = json.load(open(os.path.join(g, "golden.json")))
    p = meta["prompt1"]
    nv = sum(t in (1, 2) for t in p["types"])
    vision = np.fromfile(os.path.join(g, "vision_u8.bin"), np.uint8).reshape(-1, PATCH_DIM)[:nv]
    pos = meta["vision"]["positions_xy"]
    xy = [pos[i % len(pos)] for i in range(nv)]
    audio = np.fromfile(os.path.join(g, "audio_f32.bin"), np.float32).reshape(-1, 640)
    write_inputs(os.path.join(work, "inputs"), p["ids"], p["types"], vision, xy, audio)
    vocab = meta["vocab"]
    lg = np.fromfile(os.path.join(g, meta["logits"]["bf16_p1_A"]["file"]), np.float32).reshape(-1, vocab)
    hf = os.path.join(work, "hf")
    os.makedirs(hf, exist_ok=True)
    lg.argmax(-1).astype(np.int32).tofile(os.path.join(hf, "top1.i32"))
    np.arange(len(lg), dtype=np.int32).tofile(os.path.join(hf, "rows.i32"))
    lg.tofile(os.path.join(hf, "logits_rows.f32"))
    print("golden p1: %d positions, %d vision rows, %d audio rows" % (len(lg), nv, len(audio)))


def load(d):
    top1 = np.fromfile(os.path.join(d, "top1.i32"), np.int32)
    rows = np.fromfile(os.path.join(d, "rows.i32"), np.int32)
    lg = np.fromfile(os.path.join(d, "logits_rows.f32"), np.float32).reshape(len(rows), -1)
    return top1, {int(r): lg[i] for i, r in enumerate(rows)}


def errors(a, b):
    """(max, mean) relative L2 error per position of a against b over their common rows, top-1 agreement."""
    common = sorted(set(a[1]) & set(b[1]))
    e = np.array([np.linalg.norm(a[1][r].astype(np.float64) - b[1][r]) / max(np.linalg.norm(b[1][r]), 1e-30)
                  for r in common])
    return e.max(), e.mean(), float((a[0] == b[0]).mean()), len(common)


def margins(hf32, hf, eng, eager, hf32_dir):
    """Top-1 agreement over the positions whose fp32 top-1 leads its runner-up by at least k times the bf16 noise.

    The noise is the RMS difference per logit between transformers' bf16 and fp32 runs (over the compared rows): a
    position whose two best logits are closer than that has no top-1 that two bf16 computations must share."""
    path = os.path.join(hf32_dir, "top2.f32")
    if not os.path.exists(path):
        return
    top2 = np.fromfile(path, np.float32).reshape(-1, 2)
    gap = top2[:, 0] - top2[:, 1]
    common = sorted(set(hf[1]) & set(hf32[1]))
    noise = float(np.sqrt(np.mean([np.mean((hf[1][r].astype(np.float64) - hf32[1][r]) ** 2) for r in common])))
    scale = float(np.sqrt(np.mean([np.mean(hf32[1][r].astype(np.float64) ** 2) for r in common])))
    print("  top-1 by margin: bf16 noise %.3e per logit (logits' RMS %.3e); fp32 gap median %.3e" %
          (noise, scale, float(np.median(gap))))
    pairs = [("avserve vs transformers bf16", eng[0], hf[0]), ("avserve vs fp32", eng[0], hf32[0]),
             ("transformers bf16 vs fp32", hf[0], hf32[0])]
    if eager is not None:
        pairs.insert(1, ("eager vs sdpa", eager[0], hf[0]))
    print("    %-12s %9s  %s" % ("gap >=", "positions", "  ".join(p[0] for p in pairs)))
    for k in (0, 0.125, 0.25, 0.5, 1, 2):
        sel = gap >= k * noise
        print("    %5g x noise %8d  %s" % (k, int(sel.sum()), "  ".join(
            "%*.4f" % (len(p[0]), float((p[1][sel] == p[2][sel]).mean()) if sel.any() else float("nan"))
            for p in pairs)))


def compare(work, hf_dir=None):
    hf = load(hf_dir or os.path.join(work, "hf"))
    eng = load(os.path.join(work, "engine"))
    assert len(hf[0]) == len(eng[0]), (len(hf[0]), len(eng[0]))
    mx, mean, agree, n = errors(eng, hf)
    print("positions %d, compared rows %d: rel err (L2 per position) max %.3e mean %.3e; top-1 agreement %.4f"
          % (len(hf[0]), n, mx, mean, agree))
    eager_dir = os.path.join(work, "hf_eager")
    if hf_dir is None and os.path.isdir(eager_dir):
        e_mx, e_mean, e_agree, _ = errors(load(eager_dir), hf)
        print("  transformers bf16, eager attention, vs its sdpa run: rel err max %.3e mean %.3e; top-1 agreement %.4f"
              % (e_mx, e_mean, e_agree))
    hf32_dir = os.path.join(work, "hf32")
    if hf_dir is None and os.path.isdir(hf32_dir):
        hf32 = load(hf32_dir)
        for name, run in (("transformers bf16", hf), ("avserve bf16", eng)):
            mx32, mean32, agree32, _ = errors(run, hf32)
            print("  %-18s vs transformers fp32: rel err max %.3e mean %.3e; top-1 agreement %.4f"
                  % (name, mx32, mean32, agree32))
        margins(hf32, hf, eng, load(eager_dir) if os.path.isdir(eager_dir) else None, hf32_dir)
    return 0 if mx <= 2e-2 and agree >= 0.99 else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["make", "golden", "compare"])
    ap.add_argument("work")
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--hf", default=None, help="compare: directory of the reference outputs")
    a = ap.parse_args()
    if a.cmd == "golden":
        golden(a.work)
        return 0
    if a.cmd == "compare":
        if a.hf and os.path.exists(os.path.join(a.hf, "golden.json")):
            golden(a.work)
            a.hf = None
        return compare(a.work, a.hf)
    from parity_12b_make import make  # torch/transformers only on the GPU machine
    make(a.work, a.tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
