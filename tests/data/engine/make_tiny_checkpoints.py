#!/usr/bin/env python3
"""Makes the tiny Gemma4Unified test checkpoints and their golden outputs with transformers.

Run on a machine with torch + transformers 5.17 (the GPU machine; everything runs on its CPU):
    python3 tests/data/engine/make_tiny_checkpoints.py OUT_DIR
Writes OUT_DIR/engine_data.tar.gz (unpack into tests/data/engine/) and a log. The tree it makes:
    tiny/       bf16 checkpoint as published: config.json with the published field names
                (global_head_dim, num_global_key_value_heads, attention_k_eq_v), on-disk tensor names
                (model.vision_embedder.*), single model.safetensors, generation_config.json, tokenizer.json.
    tiny_f32/   the same weights in fp32 as transformers writes them (save_pretrained: config with
                per_layer_config, shards + model.safetensors.index.json).
    golden/     inputs and reference outputs (see golden.json).
TINY_SEEDS (default 8) weight seeds are tried; the one kept has varied greedy output (>= 10 distinct
tokens of 32 for both prompts, different continuations), no stop ids or media placeholders, and the
most greedy steps before the first near-tie in bf16.
Masks are passed explicitly to the model (spec §9.1): variant "A" = vision blocks bidirectional on
sliding layers only (documented intent), "B" = on all layers (plain-forward variant).
"""
import copy
import inspect
import json
import os
import sys
import tarfile
import traceback

import numpy as np

VOCAB = 512
HIDDEN = 64
WINDOW = 8
# Remapped multimodal special ids (the 12B uses 255999, 256000, 258880..258884).
IDS = dict(boi=500, boa=501, image=502, audio=503, eoi=504, eoa=505, video=506)
FRAME_ROWS, FRAME_COLS = 3, 4          # 12 soft tokens per video frame (> WINDOW on purpose)
AUDIO_PER_SEGMENT = 3
PATCH_DIM = 48 * 48 * 3
GEN_TOKENS = 32
STOP_IDS = [1, 106, 50]
SUPPRESS = [IDS["eoa"], IDS["eoi"]]


def log(*a):
    print(*a, flush=True)


def text_config(published):
    cfg = {
        "model_type": "gemma4_unified_text", "vocab_size": VOCAB, "hidden_size": HIDDEN,
        "intermediate_size": 2 * HIDDEN, "num_hidden_layers": 4,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
        "attention_k_eq_v": True, "sliding_window": WINDOW, "final_logit_softcapping": 30.0,
        "rms_norm_eps": 1e-6, "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 4096,
        "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, "use_bidirectional_attention": "vision",
        "num_kv_shared_layers": 0, "tie_word_embeddings": True, "attention_bias": False,
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                               "rope_theta": 1000000.0},
        },
    }
    if published:
        cfg.update({"global_head_dim": 64, "num_global_key_value_heads": 1})
    return cfg


def full_config():
    return {
        "architectures": ["Gemma4UnifiedForConditionalGeneration"], "model_type": "gemma4_unified",
        "boi_token_id": IDS["boi"], "eoi_token_id": IDS["eoi"], "image_token_id": IDS["image"],
        "video_token_id": IDS["video"], "boa_token_id": IDS["boa"], "eoa_token_index": IDS["eoa"],
        "audio_token_id": IDS["audio"], "eos_token_id": [1, 106], "tie_word_embeddings": True,
        "dtype": "bfloat16", "text_config": text_config(True),
        "vision_config": {"model_type": "gemma4_unified_vision", "patch_size": 16, "pooling_kernel_size": 3,
                          "mm_embed_dim": HIDDEN, "mm_posemb_size": 32, "output_proj_dims": HIDDEN,
                          "rms_norm_eps": 1e-6},
        "audio_config": {"model_type": "gemma4_unified_audio", "audio_embed_dim": 640, "rms_norm_eps": 1e-6},
    }


GENERATION_CONFIG = {"bos_token_id": 2, "eos_token_id": STOP_IDS, "pad_token_id": 0, "do_sample": True,
                     "temperature": 1.0, "top_k": 64, "top_p": 0.95, "suppress_tokens": SUPPRESS}

SPECIALS = {0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", 4: "<mask>", 46: "<|tool>", 47: "<tool|>",
            48: "<|tool_call>", 49: "<tool_call|>", 50: "<|tool_response>", 51: "<tool_response|>",
            52: '<|"|>', 98: "<|think|>", 100: "<|channel>", 101: "<channel|>", 105: "<|turn>",
            106: "<turn|>", IDS["boi"]: "<|image>", IDS["boa"]: "<|audio>", IDS["image"]: "<|image|>",
            IDS["audio"]: "<|audio|>", IDS["eoi"]: "<image|>", IDS["eoa"]: "<audio|>", IDS["video"]: "<|video|>"}


def tokenizer_json():
    """A valid HF BPE tokenizer.json: Gemma-style ('▁' for spaces, byte fallback) over 512 ids."""
    vocab = {}
    for i, s in SPECIALS.items():
        vocab[s] = i
    vocab["\n"] = 107
    vocab["\n\n"] = 108
    free = [i for i in range(VOCAB) if i not in vocab.values()]
    pieces = ["<0x%02X>" % b for b in range(256)]
    chars = list("▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:?!'-")
    pieces += chars
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("i", "n"), ("▁", "a"), ("e", "r"), ("o", "n"),
              ("▁", "w"), ("▁", "s"), ("a", "t"), ("e", "n"), ("▁", "i"), ("o", "u"), ("▁", "o"),
              ("i", "s"), ("▁", "c"), ("a", "n"), ("▁w", "h"), ("▁wh", "a"), ("▁wha", "t")]
    pieces += [a + b for a, b in merges]
    assert len(pieces) <= len(free), (len(pieces), len(free))
    for p, i in zip(pieces, free):
        vocab[p] = i
    for i in free[len(pieces):]:
        vocab["<unused%d>" % i] = i
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in sorted(SPECIALS.items())]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\d"}, "behavior": "Isolated",
                          "invert": False},
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }


def build_prompts(rng):
    """Prefix (media, interleaved per design.md §1) + two questions; returns ids/types lists."""
    def text(n):
        return [int(x) for x in rng.integers(109, 200, size=n)]
    ids, types = [2, 105] + text(2) + [107], [0] * 5
    for seg in range(2):
        ts = text(3)
        ids += ts + [IDS["boi"]] + [IDS["video"]] * (FRAME_ROWS * FRAME_COLS) + [IDS["eoi"]]
        types += [0] * 4 + [2] * (FRAME_ROWS * FRAME_COLS) + [0]
        ids += [IDS["boa"]] + [IDS["audio"]] * AUDIO_PER_SEGMENT + [IDS["eoa"]]
        types += [0] + [3] * AUDIO_PER_SEGMENT + [0]
    prefix_len = len(ids)
    tail = [106, 107, 105] + text(1) + [107]
    q1 = text(7) + tail
    q2 = text(5) + tail
    return (ids, types, prefix_len, ids + q1, types + [0] * len(q1), ids + q2, types + [0] * len(q2))


def masks(torch, types, variant, dtype):
    """Explicit additive masks (spec §9.1): "A" = vision blocks bidirectional on sliding layers only,
    "B" = on all layers."""
    ty = torch.tensor(types)
    isv = (ty == 1) | (ty == 2)
    prev = torch.roll(isv, 1)
    prev[0] = False
    bid = torch.cumsum((isv & ~prev).int(), 0) - 1
    bid = torch.where(isv, bid, torch.full_like(bid, -1))
    n = len(types)
    q = torch.arange(n)[:, None]
    k = torch.arange(n)[None, :]
    same = (bid[:, None] == bid[None, :]) & (bid[:, None] >= 0)
    causal = k <= q
    window = k > q - WINDOW
    if variant == "A":
        full, slide = causal, window & (causal | same)
    else:
        full, slide = causal | same, (window & causal) | same

    def add(m):
        return torch.where(m, 0.0, torch.finfo(dtype).min).to(dtype)[None, None]
    return {"full_attention": add(full), "sliding_attention": add(slide)}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "/tmp/tiny_out")
    root = os.path.join(out, "engine_data")
    os.makedirs(root, exist_ok=True)
    import torch
    import transformers
    from safetensors.torch import save_file, load_file
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration
    torch.set_num_threads(8)
    log("torch", torch.__version__, "transformers", transformers.__version__)
    dump_sources(out)

    # ---- tokenizer ---------------------------------------------------------------------------------
    tok = tokenizer_json()
    try:
        from tokenizers import Tokenizer
        t = Tokenizer.from_str(json.dumps(tok))
        enc = t.encode("<bos><|turn>user\nwhat is 12?<turn|>\n<|image><|video|><image|>")
        log("tokenizer ok:", enc.ids, "->", repr(t.decode(enc.ids, skip_special_tokens=False)))
    except Exception:
        log("TOKENIZER CHECK FAILED\n" + traceback.format_exc())

    # ---- inputs ------------------------------------------------------------------------------------
    rng = np.random.default_rng(1234)
    prefix, prefix_types, prefix_len, p1, t1, p2, t2 = build_prompts(rng)
    n_frames = 2
    pix_u8 = rng.integers(0, 256, size=(n_frames, FRAME_ROWS * FRAME_COLS, PATCH_DIM), dtype=np.uint8)
    # Make one patch nearly uniform (stresses LayerNorm eps) and one fully uniform.
    pix_u8[0, 1] = 128 + (rng.integers(0, 2, size=PATCH_DIM)).astype(np.uint8)
    pix_u8[1, 5] = 77
    vpos = np.array([[c, r] for r in range(FRAME_ROWS) for c in range(FRAME_COLS)], dtype=np.int32)
    t = np.arange(2 * AUDIO_PER_SEGMENT * 640, dtype=np.float32) / 16000.0
    audio = (0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.1 * rng.standard_normal(t.shape)).astype(np.float32)
    audio = np.clip(audio, -1, 1).reshape(2 * AUDIO_PER_SEGMENT, 640)
    audio[-1] *= 0.01  # a quiet frame
    media = dict(
        pixel_values_videos=torch.from_numpy(pix_u8).float().div(255.0).unsqueeze(0),
        video_position_ids=torch.from_numpy(np.stack([vpos] * n_frames)).long().unsqueeze(0),
        input_features=torch.from_numpy(audio).reshape(2, AUDIO_PER_SEGMENT, 640),
        input_features_mask=torch.ones(2, AUDIO_PER_SEGMENT, dtype=torch.bool))

    def forward(model, ids, types, variant):
        dtype = next(model.parameters()).dtype
        with torch.no_grad():
            o = model(input_ids=torch.tensor([ids]), mm_token_type_ids=torch.tensor([types]),
                      attention_mask=None if variant is None else masks(torch, types, variant, dtype),
                      use_cache=False, **media)
        return o.logits[0].float()

    def greedy(model, ids, types):
        ids, types = list(ids), list(types)
        toks, steps = [], []
        for _ in range(GEN_TOKENS):
            lg = forward(model, ids, types, "A")[-1].clone()
            steps.append(lg.clone())
            lg[SUPPRESS] = -float("inf")
            top = torch.topk(lg, 2)
            toks.append(int(top.indices[0]))
            ids.append(toks[-1])
            types.append(0)
        return toks, torch.stack(steps)

    def clear_steps(toks, steps):
        # Greedy steps before the first near-tie: top-1 minus top-2 (suppressed ids excluded) above
        # one bf16 step of the top logit, where a reimplementation's bf16 rounding can't flip it.
        s = steps.clone()
        s[:, SUPPRESS] = -float("inf")
        top = torch.topk(s, 2, dim=-1).values
        for i in range(len(toks)):
            if float(top[i, 0] - top[i, 1]) <= abs(float(top[i, 0])) / 128.0:
                return i
        return len(toks)

    def usable(toks):
        # No stop id (the engine would end there) and no media placeholder (not a text token).
        return not any(x in STOP_IDS or x in IDS.values() for x in toks)

    # ---- pick a weight seed whose greedy runs vary, stay clear of bf16 ties the longest, and never --
    # ---- produce stop ids or media placeholders ------------------------------------------------------
    config = Gemma4UnifiedConfig(**full_config())
    log("per_layer_config:", getattr(config.text_config, "per_layer_config", None))
    ranked = []
    for seed in range(int(os.environ.get("TINY_SEEDS", "8"))):
        model = make_model(torch, Gemma4UnifiedForConditionalGeneration, config, seed)
        mb = to_bf16(torch, model)
        try:
            toks1, s1 = greedy(mb, p1, t1)
            toks2, s2 = greedy(mb, p2, t2)
        except Exception as ex:  # a media placeholder fed back as text
            log(f"seed {seed}: greedy failed ({str(ex)[:60]})")
            continue
        clear = min(clear_steps(toks1, s1), clear_steps(toks2, s2))
        distinct = min(len(set(toks1)), len(set(toks2)))
        ok = usable(toks1 + toks2) and distinct >= 10 and toks1 != toks2
        log(f"seed {seed}: clear steps {clear} distinct {distinct} usable {ok} p1 {toks1}")
        if ok:
            ranked.append((clear, distinct, seed))
    seed = 0
    for clear, distinct, cand in sorted(ranked, reverse=True):
        # The fp32 greedy runs must be usable too (they are goldens as well).
        model = make_model(torch, Gemma4UnifiedForConditionalGeneration, config, cand)
        try:
            f32_ok = usable(greedy(model, p1, t1)[0] + greedy(model, p2, t2)[0])
        except Exception:
            f32_ok = False
        log(f"candidate seed {cand}: clear {clear} distinct {distinct} fp32 usable {f32_ok}")
        if f32_ok:
            seed = cand
            break
    log("chosen seed", seed)
    model = make_model(torch, Gemma4UnifiedForConditionalGeneration, config, seed)
    ref_bf16 = forward(to_bf16(torch, copy.deepcopy(model)), p1, t1, "A")
    ref_f32 = forward(model, p1, t1, "A")
    log("inv_freq full:", model.model.language_model.rotary_emb.full_attention_inv_freq.tolist())
    log("inv_freq sliding[:4]:", model.model.language_model.rotary_emb.sliding_attention_inv_freq[:4].tolist())

    # ---- write checkpoints ---------------------------------------------------------------------------
    tiny = os.path.join(root, "tiny")
    os.makedirs(tiny, exist_ok=True)
    sd = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()
          if k != "lm_head.weight"}
    log("HF state_dict keys:", sorted(sd))
    published = {published_name(k): v for k, v in sd.items()}
    save_file(published, os.path.join(tiny, "model.safetensors"), metadata={"format": "pt"})
    json.dump(full_config(), open(os.path.join(tiny, "config.json"), "w"), indent=2)
    json.dump(GENERATION_CONFIG, open(os.path.join(tiny, "generation_config.json"), "w"), indent=2)
    json.dump(tok, open(os.path.join(tiny, "tokenizer.json"), "w"), ensure_ascii=False)
    json.dump({"tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>",
               "pad_token": "<pad>", "unk_token": "<unk>", "add_bos_token": False},
              open(os.path.join(tiny, "tokenizer_config.json"), "w"), indent=2)
    mb, info = Gemma4UnifiedForConditionalGeneration.from_pretrained(
        tiny, dtype=torch.bfloat16, output_loading_info=True, attn_implementation="sdpa")
    log("tiny load info:", info)
    if info.get("missing_keys") or info.get("unexpected_keys"):
        log("WARNING: published names not accepted; rewriting with HF names")
        save_file(sd, os.path.join(tiny, "model.safetensors"), metadata={"format": "pt"})
        mb = Gemma4UnifiedForConditionalGeneration.from_pretrained(tiny, dtype=torch.bfloat16)
    mb.eval()
    log("tiny reload vs in-memory bf16: max|d| =", float((forward(mb, p1, t1, "A") - ref_bf16).abs().max()))
    f32dir = os.path.join(root, "tiny_f32")
    m32 = model.to(torch.float32)
    m32.generation_config.update(**GENERATION_CONFIG)
    m32.save_pretrained(f32dir, max_shard_size="1MB")
    log("tiny_f32 files:", sorted(os.listdir(f32dir)))
    mf, info = Gemma4UnifiedForConditionalGeneration.from_pretrained(
        f32dir, dtype=torch.float32, output_loading_info=True, attn_implementation="sdpa")
    log("tiny_f32 load info:", info)
    mf.eval()
    log("tiny_f32 reload vs in-memory: max|d| =", float((forward(mf, p1, t1, "A") - ref_f32).abs().max()))
    log("f32 config.json text_config keys:",
        sorted(json.load(open(os.path.join(f32dir, "config.json")))["text_config"]))

    # ---- goldens -------------------------------------------------------------------------------------
    gdir = os.path.join(root, "golden")
    os.makedirs(gdir, exist_ok=True)
    pix_u8.tofile(os.path.join(gdir, "vision_u8.bin"))
    audio.tofile(os.path.join(gdir, "audio_f32.bin"))
    meta = {"seed": seed, "window": WINDOW, "vocab": VOCAB, "prefix_len": prefix_len,
            "prompt1": {"ids": p1, "types": t1}, "prompt2": {"ids": p2, "types": t2},
            "vision": {"num_frames": n_frames, "patches_per_frame": FRAME_ROWS * FRAME_COLS,
                       "positions_xy": vpos.tolist(), "file": "vision_u8.bin",
                       "note": "uint8 [frames, patches, 6912]; engine input = value / 255"},
            "audio": {"frames": int(audio.shape[0]), "file": "audio_f32.bin"},
            "logits": {}, "greedy": {}, "versions": {"torch": torch.__version__,
                                                     "transformers": transformers.__version__}}
    for tag, mdl in (("bf16", mb), ("f32", mf)):
        for name, ids, types, variants in (("p1", p1, t1, ("A", "B")), ("p2", p2, t2, ("A",))):
            for v in variants:
                lg = forward(mdl, ids, types, v).numpy().astype(np.float32)
                fn = f"{tag}_{name}_{v}.bin"
                lg.tofile(os.path.join(gdir, fn))
                meta["logits"][f"{tag}_{name}_{v}"] = {"file": fn, "shape": list(lg.shape)}
            for v in ("A", "B"):
                try:
                    plain = forward(mdl, ids, types, None)
                    ref = forward(mdl, ids, types, v)
                    log(f"{tag} {name}: plain HF forward vs explicit {v}: max|d| = "
                        f"{float((plain - ref).abs().max()):.3e}")
                except Exception:
                    log("plain forward failed\n" + traceback.format_exc())
            toks, steps = greedy(mdl, ids, types)
            fn = f"{tag}_{name}_greedy.bin"
            steps.numpy().astype(np.float32).tofile(os.path.join(gdir, fn))
            meta["greedy"][f"{tag}_{name}"] = {"tokens": toks, "step_logits": fn,
                                                "shape": list(steps.shape)}
            log(tag, name, "greedy:", toks)
        d = forward(mdl, p1, t1, "A") - forward(mdl, p1, t1, "B")
        log(f"{tag}: variant A vs B max|d| = {float(d.abs().max()):.3e}")
    json.dump(meta, open(os.path.join(gdir, "golden.json"), "w"), indent=1)
    with tarfile.open(os.path.join(out, "engine_data.tar.gz"), "w:gz") as tf:
        tf.add(root, arcname=".")
    log("done; sizes:", {f: os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(root) for f in fs})


def to_bf16(torch, model):
    """model.to(bf16) but with the RoPE inverse frequencies kept in fp32 (as from_pretrained does)."""
    keep = {n: b.detach().clone() for n, b in model.named_buffers() if "inv_freq" in n}
    model = model.to(torch.bfloat16)
    for n, b in model.named_buffers():
        if n in keep:
            b.data = keep[n]
    return model


def published_name(k):
    """HF module names -> on-disk names of google/gemma-4-12B-it (spec §7.1)."""
    if k.startswith("model.embed_vision.multimodal_embedder."):
        return "model.embed_vision." + k[len("model.embed_vision.multimodal_embedder."):]
    if k.startswith("model.embed_vision."):
        return "model.vision_embedder." + k[len("model.embed_vision."):]
    return k


def make_model(torch, cls, config, seed):
    """Random weights with O(1) activations; norms/scalars away from 1 so mistakes show."""
    torch.manual_seed(seed)
    model = cls(config).eval().to(torch.float32)
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if "inv_freq" in name or "embed_scale" in name or name == "lm_head.weight":
                continue
            shape = p.shape
            if name.endswith("layer_scalar"):
                v = 0.6 + 0.8 * torch.rand(shape, generator=g)
            elif "post_attention_layernorm" in name or "post_feedforward_layernorm" in name:
                # Large post-norm gains let the layers compete with the x8 token embedding in the
                # residual stream (otherwise a random model just repeats its last token).
                v = 6.0 * (1.0 + 0.3 * torch.randn(shape, generator=g))
            elif "q_norm" in name or "k_norm" in name:
                # Small q/k gains keep the unscaled (scale 1.0) attention logits O(1): with gains ~1
                # a random model's softmax is so peaked that bf16 rounding noise decides it.
                v = 0.3 * (1.0 + 0.2 * torch.randn(shape, generator=g))
            elif name == "model.language_model.norm.weight":
                # Small final gain keeps logits near 2 where bf16 steps are fine (fewer greedy ties).
                # Random signs: with the tied head, an all-positive gain makes every token's own
                # logit the largest, so greedy decoding repeats the last token forever; mixed signs
                # remove that bias and greedy output then depends on the context.
                sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
                v = 0.25 * sign * (1.0 + 0.3 * torch.randn(shape, generator=g))
            elif "norm" in name or "_ln" in name:
                v = (1.0 + 0.3 * torch.randn(shape, generator=g)) if name.endswith("weight") \
                    else 0.2 * torch.randn(shape, generator=g)
            elif "embed_tokens" in name:
                v = torch.randn(shape, generator=g)
            elif "pos_embedding" in name:
                v = 0.5 * torch.randn(shape, generator=g)
            elif name.endswith("bias"):
                v = 0.1 * torch.randn(shape, generator=g)
            elif p.dim() == 2:
                v = torch.randn(shape, generator=g) / (shape[1] ** 0.5)
            else:
                log("unhandled tensor", name, tuple(shape))
                continue
            p.copy_(v.to(torch.bfloat16).to(torch.float32))  # values exactly representable in bf16
    model.tie_weights()
    return model


def dump_sources(out):
    try:
        import transformers.masking_utils as mu
        from transformers.models.gemma4_unified import modeling_gemma4_unified as mg
        from transformers.models.gemma4_unified import configuration_gemma4_unified as cg
        from transformers import modeling_rope_utils as ru
        with open(os.path.join(out, "hf_sources.txt"), "w") as f:
            f.write(inspect.getsource(mg))
            f.write("\n\n######## CONFIG\n" + inspect.getsource(cg))
            f.write("\n\n######## MASKING\n" + inspect.getsource(mu))
            f.write("\n\n######## ROPE proportional\n" + inspect.getsource(ru._compute_proportional_rope_parameters))
    except Exception:
        log("source dump failed\n" + traceback.format_exc())


if __name__ == "__main__":
    main()
