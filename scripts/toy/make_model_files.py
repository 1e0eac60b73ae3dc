#!/usr/bin/env python3
"""Writes the toy checkpoint's sidecar files into deploy/toy-model/: tokenizer.json (a small
Gemma-scheme BPE, see toyworld.vocab_and_merges), config.json (gemma4_unified at tiny sizes, in the
layout of google/gemma-4-12B-it's config.json) and generation_config.json. model.safetensors comes
from scripts/toy/train.py.
  /usr/bin/python3 scripts/toy/make_model_files.py [out_dir]"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "samples", "toy"))
import toyworld as tw  # noqa: E402

HIDDEN = 192
LAYER_TYPES = ["sliding_attention", "sliding_attention", "full_attention",
               "sliding_attention", "sliding_attention", "full_attention"]


def config(vocab: dict) -> dict:
    tid = vocab.get
    text = {
        "model_type": "gemma4_unified_text",
        "vocab_size": len(vocab),
        "hidden_size": HIDDEN,
        "intermediate_size": 4 * HIDDEN,
        "num_hidden_layers": len(LAYER_TYPES),
        "layer_types": LAYER_TYPES,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 48,
        "global_head_dim": 96,
        "num_global_key_value_heads": 1,
        "attention_k_eq_v": True,
        "num_kv_shared_layers": 0,
        "sliding_window": 512,
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                               "rope_theta": 1000000.0},
        },
        "final_logit_softcapping": 30.0,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 16384,
        "use_bidirectional_attention": "vision",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_double_wide_mlp": False,
        "tie_word_embeddings": True,
        "pad_token_id": tid("<pad>"),
        "eos_token_id": tid("<eos>"),
        "bos_token_id": tid("<bos>"),
        "initializer_range": 0.02,
    }
    return {
        "architectures": ["Gemma4UnifiedForConditionalGeneration"],
        "model_type": "gemma4_unified",
        "text_config": text,
        "vision_config": {"model_type": "gemma4_unified_vision", "patch_size": 16, "pooling_kernel_size": 3,
                          "mm_embed_dim": HIDDEN, "mm_posemb_size": 1120, "output_proj_dims": HIDDEN,
                          "rms_norm_eps": 1e-6, "initializer_range": 0.02},
        "audio_config": {"model_type": "gemma4_unified_audio", "audio_embed_dim": 640, "rms_norm_eps": 1e-6,
                         "initializer_range": 0.02},
        "boi_token_id": tid("<|image>"),
        "eoi_token_id": tid("<image|>"),
        "image_token_id": tid("<|image|>"),
        "video_token_id": tid("<|video|>"),
        "boa_token_id": tid("<|audio>"),
        "eoa_token_index": tid("<audio|>"),
        "audio_token_id": tid("<|audio|>"),
        "eos_token_id": [tid("<eos>"), tid("<turn|>")],
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
        "dtype": "bfloat16",
    }


def generation_config(vocab: dict) -> dict:
    return {"bos_token_id": vocab["<bos>"], "pad_token_id": vocab["<pad>"],
            "eos_token_id": [vocab["<eos>"], vocab["<turn|>"], vocab["<|tool_response>"]],
            "suppress_tokens": [vocab["<audio|>"], vocab["<image|>"]],
            "do_sample": False, "transformers_version": "5.17.0"}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "deploy", "toy-model")
    os.makedirs(out, exist_ok=True)
    tj = tw.tokenizer_json()
    vocab = tj["model"]["vocab"]
    tw.write_json(os.path.join(out, "tokenizer.json"), tj)
    tw.write_json(os.path.join(out, "config.json"), config(vocab))
    tw.write_json(os.path.join(out, "generation_config.json"), generation_config(vocab))
    tw.write_json(os.path.join(out, "tokenizer_config.json"),
                  {"tokenizer_class": "GemmaTokenizer", "add_bos_token": False, "bos_token": "<bos>",
                   "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
                   "model_max_length": 16384})
    print(f"{out}: vocab {len(vocab)}")


if __name__ == "__main__":
    main()
