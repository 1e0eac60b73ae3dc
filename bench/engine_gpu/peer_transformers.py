#!/usr/bin/env python3
"""The peer for bench/engine_gpu.sh: transformers (sdpa) running Gemma 4 12B Unified at its real shape with
random bf16 weights on the same GPU. Prints and writes `prefill32k_s=.. prefill64k_s=.. decode_ms=..`.
    peer_transformers.py OUT_FILE [--lengths 32768,65536] [--decode_ctx 32768] [--checkpoint DIR]
Prefill keeps only the last position's logits (as generate() does); decode is greedy with the KV cache.
"""
import argparse
import sys
import time

import torch


def text_config():
    # spec §1.1 (the 12B); the field names are the published config.json's.
    return {
        "model_type": "gemma4_unified_text", "vocab_size": 262144, "hidden_size": 3840,
        "intermediate_size": 15360, "num_hidden_layers": 48,
        "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 8,
        "num_attention_heads": 16, "num_key_value_heads": 8, "num_global_key_value_heads": 1,
        "head_dim": 256, "global_head_dim": 512, "attention_k_eq_v": True, "sliding_window": 1024,
        "final_logit_softcapping": 30.0, "rms_norm_eps": 1e-6, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 262144, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
        "use_bidirectional_attention": "vision", "num_kv_shared_layers": 0, "tie_word_embeddings": True,
        "attention_bias": False,
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6},
        },
    }


def model_config():
    """The whole Gemma4UnifiedConfig at the 12B shape (ids as published), attention through sdpa."""
    from transformers import Gemma4UnifiedConfig
    cfg = Gemma4UnifiedConfig(
        text_config=text_config(), tie_word_embeddings=True, dtype="bfloat16",
        vision_config={"model_type": "gemma4_unified_vision", "patch_size": 16, "pooling_kernel_size": 3,
                       "mm_embed_dim": 3840, "mm_posemb_size": 1120, "output_proj_dims": 3840, "rms_norm_eps": 1e-6},
        audio_config={"model_type": "gemma4_unified_audio", "audio_embed_dim": 640, "rms_norm_eps": 1e-6},
        boi_token_id=255999, eoi_token_id=258882, image_token_id=258880, video_token_id=258884,
        boa_token_id=256000, eoa_token_index=258883, audio_token_id=258881, eos_token_id=[1, 106])
    for c in (cfg, cfg.text_config):
        c._attn_implementation = "sdpa"
    return cfg


def build_model():
    """The model with its (random) bf16 weights allocated on the GPU, in eval mode."""
    from transformers import Gemma4UnifiedForConditionalGeneration
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Gemma4UnifiedForConditionalGeneration(model_config())
    torch.set_default_dtype(torch.float32)
    return model.eval()


def timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--lengths", default="32768,65536")
    ap.add_argument("--decode_ctx", type=int, default=32768)
    ap.add_argument("--checkpoint", default=None, help="load these weights (the engine's) instead of random ones")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.checkpoint:
        from transformers import Gemma4UnifiedForConditionalGeneration
        model = Gemma4UnifiedForConditionalGeneration.from_pretrained(
            args.checkpoint, dtype=torch.bfloat16, device_map="cuda", attn_implementation="sdpa").eval()
    else:
        model = build_model()
    print(f"peer: model built in {time.perf_counter() - t0:.1f} s, "
          f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params", flush=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    results = {}
    with torch.no_grad():
        warm = torch.randint(10, 200000, (1, 1024), device="cuda", generator=gen)
        model(input_ids=warm, use_cache=False, logits_to_keep=1)
        for n in [int(x) for x in args.lengths.split(",") if x]:
            ids = torch.randint(10, 200000, (1, n), device="cuda", generator=gen)
            out, dt = timed(lambda: model(input_ids=ids, use_cache=True, logits_to_keep=1))
            results[f"prefill{n // 1024}k_s"] = dt
            print(f"peer: prefill {n} tokens {dt:.3f} s", flush=True)
            if n == args.decode_ctx:
                past = out.past_key_values
                nxt = out.logits[:, -1:].argmax(-1)
                times = []
                for _ in range(12):
                    out, dt = timed(lambda: model(input_ids=nxt, past_key_values=past, use_cache=True))
                    past = out.past_key_values
                    nxt = out.logits[:, -1:].argmax(-1)
                    times.append(dt)
                results["decode_ms"] = 1e3 * sorted(times[2:])[len(times[2:]) // 2]
                print(f"peer: decode @{n} {results['decode_ms']:.2f} ms/token", flush=True)
            del out
            torch.cuda.empty_cache()
    line = " ".join(f"{k}={v:.4f}" for k, v in results.items())
    print("peer", line, flush=True)
    with open(args.out, "w") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main())
