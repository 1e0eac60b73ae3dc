"""`parity_12b.py make`: the transformers side of the 12B-shape parity (GPU machine only; see parity_12b.py).

Writes WORK/ckpt (config.json + ONE model.safetensors via save_pretrained), WORK/inputs (the prompt in
logits_dump's format), WORK/hf (bf16 model: top-1 of every position, fp32 logits of every 64th position and the
last), WORK/hf_eager (the same bf16 run with eager attention instead of sdpa: how far two transformers bf16 runs
land from each other) and WORK/hf32 (the same weights run in fp32: the reference both bf16 runs are measured
against).
First run in session 4 (the whole-config fix above came from it).
"""
import os
import time

import numpy as np
import torch

from parity_12b import PATCH_DIM, write_inputs
from peer_transformers import build_model

IDS = dict(boi=255999, eoi=258882, image=258880, video=258884, boa=256000, eoa=258883, audio=258881)
GRID = 16            # a 768x768 frame: 16x16 patches of 48x48
AUDIO_PER_SEC = 25   # 40 ms frames
ROWS_EVERY = 64


def randomize(model, seed=0):
    """Random bf16 weights with O(1) activations (the tiny checkpoints' scheme, on the GPU)."""
    g = torch.Generator(device="cuda").manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=g, device="cuda", dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "lm_head.weight":
                continue
            s = p.shape
            if name.endswith("layer_scalar"):
                v = 0.6 + 0.8 * torch.rand(s, generator=g, device="cuda")
            elif "post_attention_layernorm" in name or "post_feedforward_layernorm" in name:
                v = 6.0 * (1.0 + 0.3 * randn(s))
            elif "q_norm" in name or "k_norm" in name:
                v = 0.3 * (1.0 + 0.2 * randn(s))
            elif name == "model.language_model.norm.weight":
                v = 0.25 * torch.sign(randn(s)) * (1.0 + 0.3 * randn(s))
            elif "norm" in name or "_ln" in name:
                v = (1.0 + 0.3 * randn(s)) if name.endswith("weight") else 0.2 * randn(s)
            elif "embed_tokens" in name:
                v = randn(s)
            elif "pos_embedding" in name:
                v = 0.5 * randn(s)
            elif name.endswith("bias"):
                v = 0.1 * randn(s)
            elif p.dim() == 2:
                v = randn(s) / (s[1] ** 0.5)
            else:
                print("left at init:", name, tuple(s), flush=True)
                continue
            p.copy_(v.to(p.dtype))
    model.tie_weights()


def prompt(tokens, rng):
    """Text, then per second: text, one video frame (GRID x GRID patches), one second of audio."""
    def text(n):
        return [int(x) for x in rng.integers(1000, 200000, size=n)]
    ids, types = [2, 105] + text(6) + [107], [0] * 9
    frames = 0
    while len(ids) + 8 + GRID * GRID + AUDIO_PER_SEC + 4 + 16 <= tokens:
        ids += text(4) + [IDS["boi"]] + [IDS["video"]] * (GRID * GRID) + [IDS["eoi"]]
        types += [0] * 5 + [2] * (GRID * GRID) + [0]
        ids += [IDS["boa"]] + [IDS["audio"]] * AUDIO_PER_SEC + [IDS["eoa"]]
        types += [0] + [3] * AUDIO_PER_SEC + [0]
        frames += 1
    tail = text(tokens - len(ids) - 5) + [106, 107, 105] + text(1) + [107]
    return ids + tail, types + [0] * len(tail), frames


def masks(types, window, dtype):
    """Variant "A" of spec §9.1 (vision blocks bidirectional on sliding layers), as the engine's default."""
    ty = torch.tensor(types, device="cuda")
    isv = (ty == 1) | (ty == 2)
    prev = torch.roll(isv, 1)
    prev[0] = False
    bid = torch.cumsum((isv & ~prev).int(), 0) - 1
    bid = torch.where(isv, bid, torch.full_like(bid, -1))
    n = len(types)
    q = torch.arange(n, device="cuda")[:, None]
    k = torch.arange(n, device="cuda")[None, :]
    same = (bid[:, None] == bid[None, :]) & (bid[:, None] >= 0)
    causal = k <= q
    slide = (k > q - window) & (causal | same)

    def add(m):
        return torch.where(m, 0.0, torch.finfo(dtype).min).to(dtype)[None, None]
    return {"full_attention": add(causal), "sliding_attention": add(slide)}


def make(work, tokens):
    t0 = time.time()
    model = build_model()
    cfg = model.config
    randomize(model)
    ckpt = os.path.join(work, "ckpt")
    model.save_pretrained(ckpt, max_shard_size="200GB")  # one model.safetensors
    # save_pretrained writes config.json as a diff against the class defaults, recursing into per_layer_config:
    # a full layer's head_dim of 512 equals the default global head dim, so it is dropped and the entry reads
    # {"num_key_value_heads": 1}. A published config.json is written whole; do the same.
    model.config.to_json_file(os.path.join(ckpt, "config.json"), use_diff=False)
    print("per_layer_config:", repr(model.config.text_config.per_layer_config)[:240], flush=True)
    print("checkpoint:", sorted(os.listdir(ckpt)), "%.0f s" % (time.time() - t0), flush=True)

    rng = np.random.default_rng(7)
    ids, types, frames = prompt(tokens, rng)
    nv = frames * GRID * GRID
    vision = rng.integers(0, 256, size=(nv, PATCH_DIM), dtype=np.uint8)
    xy = np.array([[c, r] for r in range(GRID) for c in range(GRID)] * frames, dtype=np.int32)
    t = np.arange(frames * AUDIO_PER_SEC * 640, dtype=np.float32) / 16000.0
    audio = (0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.1 * rng.standard_normal(t.shape)).astype(np.float32)
    audio = np.clip(audio, -1, 1).reshape(frames, AUDIO_PER_SEC, 640)
    write_inputs(os.path.join(work, "inputs"), ids, types, vision, xy, audio)
    print("prompt: %d positions, %d frames (%d vision rows), %d audio rows" % (len(ids), frames, nv,
                                                                             frames * AUDIO_PER_SEC), flush=True)
    media = dict(
        pixel_values_videos=torch.from_numpy(vision).cuda().float().div(255.0).reshape(1, frames, GRID * GRID, -1),
        video_position_ids=torch.from_numpy(xy).cuda().long().reshape(1, frames, GRID * GRID, 2),
        input_features=torch.from_numpy(audio).cuda(),
        input_features_mask=torch.ones(frames, AUDIO_PER_SEC, dtype=torch.bool, device="cuda"))
    rows = sorted(set(range(0, len(ids), ROWS_EVERY)) | {len(ids) - 1})

    def run(dtype, name):
        t1 = time.time()
        out = model(input_ids=torch.tensor([ids], device="cuda"),
                    mm_token_type_ids=torch.tensor([types], device="cuda"),
                    attention_mask=masks(types, cfg.text_config.sliding_window, dtype), use_cache=False, **media)
        torch.cuda.synchronize()
        print("transformers %s forward %.2f s" % (dtype, time.time() - t1), flush=True)
        save(os.path.join(work, name), out.logits[0], rows)

    with torch.no_grad():
        run(torch.bfloat16, "hf")
        # The bar's own noise: transformers bf16 again with its eager attention in place of sdpa, the same weights
        # and inputs (two valid bf16 computations that differ only in how attention rounds and sums).
        try:
            model.set_attn_implementation("eager")
            run(torch.bfloat16, "hf_eager")
        except (AttributeError, ValueError, torch.cuda.OutOfMemoryError) as e:
            print("transformers eager bf16 run skipped:", e, flush=True)
        finally:
            if hasattr(model, "set_attn_implementation"):
                model.set_attn_implementation("sdpa")
        # The floor: the same weights in fp32 (transformers' own bf16 rounding is measured against it).
        model.float()
        torch.cuda.empty_cache()
        run(torch.float32, "hf32")
    del model
    torch.cuda.empty_cache()


def save(d, lg, rows):
    """top-1 of every position and fp32 logits of `rows`, in logits_dump's format; also the two largest logits of
    every position (top2.f32, [positions, 2]): their gap is how firmly the position's top-1 is decided."""
    os.makedirs(d, exist_ok=True)
    lg.argmax(-1).int().cpu().numpy().tofile(os.path.join(d, "top1.i32"))
    lg.topk(2, dim=-1).values.float().cpu().numpy().tofile(os.path.join(d, "top2.f32"))
    np.asarray(rows, np.int32).tofile(os.path.join(d, "rows.i32"))
    lg[rows].float().cpu().numpy().tofile(os.path.join(d, "logits_rows.f32"))
