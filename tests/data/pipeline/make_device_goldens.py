#!/usr/bin/env python3
"""Goldens from transformers 5.17 / tokenizers on the GPU machine (run once, results committed).

Run from the repository root with the (uncommitted) inputs present:
  .cache/tokenizer-gemma3/tokenizer.json      scripts/fetch_test_data
  .cache/chat_template/gemma4.jinja           llama.cpp models/templates/gemma4.jinja (not committed)
  OUT=<dir> python3 tests/data/pipeline/make_device_goldens.py
Writes to $OUT:
  chat_goldens.json       apply_chat_template text + token ids for chat_conversations.json
  reference_goldens.json  Gemma4UnifiedProcessor input_ids / mm_token_type_ids for synthetic videos
  tokenizer_check.json    Python `tokenizers` vs the committed goldens.bin (from the npm binding)
Every section is independent: a failure is recorded in the output and the others still run.
"""
import json
import os
import struct
import sys
import time
import traceback

import numpy as np

OUT = os.environ.get("OUT", "/tmp/out")
HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER_JSON = ".cache/tokenizer-gemma3/tokenizer.json"
TEMPLATE = open(".cache/chat_template/gemma4.jinja").read()
MEDIA_TOKENS = {"image_token": "<|image|>", "boi_token": "<|image>", "eoi_token": "<image|>",
                "audio_token": "<|audio|>", "boa_token": "<|audio>", "eoa_token": "<audio|>"}


def gemma4_json():
    data = json.load(open(TOKENIZER_JSON))
    table = json.load(open(os.path.join(HERE, "..", "tokenizer", "gemma4_special_tokens.json")))["tokens"]
    vocab = data["model"]["vocab"]
    by_id = {v: k for k, v in vocab.items()}
    for tid, content in table:
        if tid in by_id:
            del vocab[by_id[tid]]
        vocab[content] = tid
        for entry in data["added_tokens"]:
            if entry["id"] == tid:
                entry["content"], entry["special"] = content, True
                break
        else:
            data["added_tokens"].append({"id": tid, "content": content, "single_word": False, "lstrip": False,
                                         "rstrip": False, "normalized": False, "special": True})
    return json.dumps(data)


def hf_tokenizer(raw):
    from transformers import PreTrainedTokenizerFast
    kwargs = dict(tokenizer_object=raw, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    for extra_key in ("extra_special_tokens", "model_specific_special_tokens", None):
        try:
            tok = PreTrainedTokenizerFast(**kwargs, **({extra_key: dict(MEDIA_TOKENS)} if extra_key else {}))
            break
        except Exception:  # noqa: BLE001 - older/newer keyword names
            continue
    for name, text in MEDIA_TOKENS.items():
        try:
            if getattr(tok, name, None) != text:
                setattr(tok, name, text)
            if getattr(tok, name + "_id", None) is None:
                setattr(tok, name + "_id", tok.convert_tokens_to_ids(text))
        except Exception:  # noqa: BLE001
            pass
    return tok


def read_docs(path, magic):
    buf = open(path, "rb").read()
    assert buf[:4] == magic, path
    return buf, struct.unpack_from("<I", buf, 4)[0], 8


def tokenizer_check(raw):
    buf, n, off = read_docs(os.path.join(HERE, "..", "tokenizer", "corpus.bin"), b"AVCP")
    gbuf, gn, goff = read_docs(os.path.join(HERE, "..", "tokenizer", "goldens.bin"), b"AVTG")
    assert n == gn
    docs, mismatches, decode_mismatches = [], [], 0
    for i in range(n):
        (length,) = struct.unpack_from("<I", buf, off)
        docs.append(buf[off + 4: off + 4 + length].decode("utf-8", errors="replace"))
        off += 4 + length
        (count,) = struct.unpack_from("<I", gbuf, goff)
        ids = list(struct.unpack_from(f"<{count}i", gbuf, goff + 4))
        goff += 4 + 4 * count
        (dlen,) = struct.unpack_from("<I", gbuf, goff)
        decoded = gbuf[goff + 4: goff + 4 + dlen].decode("utf-8")
        goff += 4 + dlen
        got = raw.encode(docs[-1], add_special_tokens=False).ids
        if got != ids:
            mismatches.append(i)
        if raw.decode(ids, skip_special_tokens=False) != decoded:
            decode_mismatches += 1
    start = time.perf_counter()
    for doc in docs:
        raw.encode(doc, add_special_tokens=False)
    seconds = time.perf_counter() - start
    import tokenizers
    return {"tokenizers_version": tokenizers.__version__, "documents": n, "encode_mismatches": mismatches[:50],
            "num_encode_mismatches": len(mismatches), "decode_mismatches": decode_mismatches,
            "python_encode_seconds_single_thread": seconds,
            "corpus_bytes": sum(len(d.encode()) for d in docs)}


def chat_goldens(tok):
    convs = json.load(open(os.path.join(HERE, "chat_conversations.json")))["conversations"]
    out = []
    for conv in convs:
        text = tok.apply_chat_template(conv["messages"], chat_template=TEMPLATE, tokenize=False,
                                       add_generation_prompt=conv["add_generation_prompt"],
                                       enable_thinking=conv["thinking"])
        out.append({"text": text, "ids": tok(text, add_special_tokens=False)["input_ids"]})
    import transformers
    return {"transformers_version": transformers.__version__, "goldens": out}


def make_processor(tok):
    import importlib
    base = "transformers.models.gemma4_unified."

    def pick(module, suffix):
        mod = importlib.import_module(base + module)
        names = sorted(n for n in getattr(mod, "__all__", dir(mod)) if n.endswith(suffix) and "Kwargs" not in n)
        return getattr(mod, names[0])

    feature = pick("feature_extraction_gemma4_unified", "FeatureExtractor")()
    image = pick("image_processing_gemma4_unified", "ImageProcessor")()
    video = pick("video_processing_gemma4_unified", "VideoProcessor")()
    proc_cls = pick("processing_gemma4_unified", "Processor")
    return proc_cls(feature_extractor=feature, image_processor=image, tokenizer=tok, video_processor=video,
                    chat_template=TEMPLATE)


def run_processor(processor, text, frames, fps, audio):
    from transformers.video_utils import VideoMetadata
    meta = VideoMetadata(total_num_frames=frames.shape[0], fps=fps, width=frames.shape[2],
                         height=frames.shape[1], duration=frames.shape[0] / fps)
    kwargs = dict(text=[text], videos=[frames], return_tensors="np")
    if audio is not None:
        kwargs["audio"] = [audio]
    errors = []
    for extra in ({"video_metadata": [meta]}, {"videos_kwargs": {"video_metadata": [meta]}}, {}):
        try:
            return processor(**kwargs, **extra), errors
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e)[:400])
    raise RuntimeError("; ".join(errors))


def reference_goldens(tok):
    processor = make_processor(tok)
    rng = np.random.default_rng(7)
    cases = [dict(frames=90, fps=30.0, height=360, width=640, audio=48000, thinking=False, system=""),
             dict(frames=300, fps=25.0, height=480, width=640, audio=0, thinking=True, system="Be brief."),
             dict(frames=40, fps=10.0, height=720, width=1280, audio=70001, thinking=False, system=""),
             dict(frames=33, fps=29.97, height=240, width=320, audio=1000, thinking=True, system="")]
    out = []
    for case in cases:
        frames = rng.integers(0, 256, (case["frames"], case["height"], case["width"], 3), dtype=np.uint8)
        audio = rng.uniform(-0.5, 0.5, case["audio"]).astype(np.float32) if case["audio"] else None
        content = [{"type": "video"}] + ([{"type": "audio"}] if audio is not None else [])
        content.append({"type": "text", "text": "What happens?"})
        messages = ([{"role": "system", "content": case["system"]}] if case["system"] else []) + \
            [{"role": "user", "content": content}]
        text = tok.apply_chat_template(messages, chat_template=TEMPLATE, tokenize=False,
                                       add_generation_prompt=True, enable_thinking=case["thinking"])
        result, errors = run_processor(processor, text, frames, case["fps"], audio)
        entry = dict(case, prompt_text=text, call_errors=errors,
                     input_ids=np.asarray(result["input_ids"])[0].tolist(),
                     mm_token_type_ids=np.asarray(result.get("mm_token_type_ids", [[]]))[0].tolist())
        for key in ("num_soft_tokens_per_video",):
            if key in result:
                entry[key] = np.asarray(result[key]).tolist()
        if "video_position_ids" in result:
            entry["video_position_ids_frame0"] = np.asarray(result["video_position_ids"])[0][0].tolist()
        out.append(entry)
    return {"goldens": out}


def main():
    os.makedirs(OUT, exist_ok=True)
    from tokenizers import Tokenizer
    raw = Tokenizer.from_str(gemma4_json())
    tok = hf_tokenizer(raw)
    sections = os.environ.get("SECTIONS", "chat_goldens,reference_goldens,tokenizer_check").split(",")
    for name, fn, arg in (("chat_goldens", chat_goldens, tok), ("reference_goldens", reference_goldens, tok),
                          ("tokenizer_check", tokenizer_check, raw)):
        if name not in sections:
            continue
        start = time.time()
        try:
            result = fn(arg)
        except Exception:  # noqa: BLE001
            result = {"error": traceback.format_exc()}
        result["seconds"] = time.time() - start
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(result, f, ensure_ascii=False)
        print(name, "error" if "error" in result else "ok", f"{result['seconds']:.1f}s", flush=True)
        if "error" in result:
            print(result["error"][-3000:], file=sys.stderr)


if __name__ == "__main__":
    main()
