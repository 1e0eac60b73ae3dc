"""Training/eval examples for the toy model (numpy only; the GPU renders the frames).

One example = one clip + several questions about it, packed as a prefix tree: the shared prefix
(chat template start + the interleaved stream) followed by K question branches. Each branch gets the
position ids it would have right after the prefix, and attention masks (mask_arrays) keep branches
apart, so every branch computes exactly what a separate prompt "prefix + branch" computes in avserve,
while the long media prefix is processed once.
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "samples", "toy"))
import toyworld as tw  # noqa: E402

IGNORE = -100


class Vocab:
    """Token ids the examples need, from a tokenizer with an encode(text) -> ids method."""

    def __init__(self, tok):
        self.tok = tok
        enc = tok.encode
        one = lambda s: enc(s)[0]  # noqa: E731
        self.pad, self.turn_end = one("<pad>"), one("<turn|>")
        self.video, self.audio, self.image = one("<|video|>"), one("<|audio|>"), one("<|image|>")
        self.eoi, self.boa, self.eoa = one("<image|>"), one("<|audio>"), one("<audio|>")
        assert len(enc("beep")) == 1
        self.beep = one("beep")
        answers = set(tw.COLOUR_NAMES) | set(tw.SHAPES) | set(tw.WORDS) | {tw.timestamp(s) for s in range(60)}
        self.answer_id = {}
        for a in sorted(answers):
            ids = enc(a)
            assert len(ids) == 1, f"answer {a!r} is not one token: {ids}"
            self.answer_id[a] = ids[0]
        self.timestamp_ids = {self.answer_id[tw.timestamp(s)] for s in range(60)}


def augment_audio(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Codec-like damage: extra noise, sometimes a low-pass (AAC band limit)."""
    if rng.random() < 0.3:
        f = np.fft.rfft(y)
        cut = int(len(f) * rng.uniform(4000, 7600) / (tw.SAMPLE_RATE / 2))
        f[cut:] = 0
        y = np.fft.irfft(f, n=len(y)).astype(np.float32)
    y = y + rng.normal(0, rng.uniform(0, 0.002), size=len(y)).astype(np.float32)
    return np.clip(y, -1, 1).astype(np.float32)


def make_example(seed: int, seconds: int, vocab: Vocab, bank: tw.WordBank, train: bool,
                 condition: str = "aligned", branches: int = 6, per_template: int = 1, bind: bool = False) -> dict:
    """condition: aligned | shift3 (audio delayed 3 s) | shuffle (frames deranged). The answers are
    always those of the aligned scene."""
    rng = np.random.default_rng(seed)
    scene = tw.sample_scene(rng, seconds)
    order = list(range(seconds))
    if condition == "shuffle":
        while True:
            order = [int(v) for v in rng.permutation(seconds)]
            if all(o != k for k, o in enumerate(order)):
                break
    layout = tw.Layout()
    if train:
        layout = tw.Layout(newlines_around_video=rng.random() < 0.85, empty_thought=rng.random() < 0.85)
    noise = float(rng.uniform(0.001, 0.006)) if train else 0.003
    y = tw.render_audio(scene, bank, rng, noise_rms=noise, shift_s=3 if condition == "shift3" else 0)
    if train:
        y = augment_audio(y, rng)

    # One question per template where possible (balanced), up to `branches`.
    qs = tw.questions(scene)
    picked = []
    for _, tid, _ in tw.TEMPLATES:
        pool = [q for q in qs if q["template"] == tid]
        for i in rng.permutation(len(pool))[:per_template]:
            picked.append(pool[int(i)])
    rng.shuffle(picked)
    picked = picked[:branches]

    full = tw.prompt_text(seconds, "\x00", layout)
    prefix_text, suffix_tpl = full.split("\x00")
    prefix = vocab.tok.encode(prefix_text)
    ids, pos, branch, labels, answer_at = list(prefix), list(range(len(prefix))), [0] * len(prefix), [], []
    labels = [IGNORE] * len(prefix)
    # Auxiliary targets: predict each segment's timestamp token from the stream before it (teaches
    # the model to know which second every position belongs to).
    aux = [IGNORE] * len(prefix)
    for i in range(len(prefix) - 1):
        if prefix[i + 1] in vocab.timestamp_ids:
            aux[i] = prefix[i + 1]
    # Perception targets at the frame/audio block ends of each second (training signal only; the
    # logits of prompt positions are never sampled): the shape at <image|>, its colour at <|audio>,
    # the sound ("beep" or the word) at <audio|>.
    aux2 = [IGNORE] * len(prefix)
    if train and condition == "aligned":
        p = np.array(prefix)
        ends = [np.nonzero(p == t)[0] for t in (vocab.eoi, vocab.boa, vocab.eoa)]
        for k in range(min(seconds, len(ends[0]))):
            if scene.kind[k]:
                aux[ends[0][k]] = vocab.answer_id[tw.SHAPES[scene.kind[k] - 1]]
                if k < len(ends[1]):
                    aux[ends[1][k]] = vocab.answer_id[scene.colour[k]]
            if scene.sound[k] and k < len(ends[2]):
                aux[ends[2][k]] = vocab.beep if scene.sound[k] == "beep" else vocab.answer_id[scene.sound[k]]
                # Binding target: the same position also names the shape on screen, so that what is
                # heard and what is seen in one second meet in one place (questions like "which word
                # is spoken while the square is visible" then need one attention hop, not two).
                if scene.kind[k] and bind:
                    aux2[ends[2][k]] = vocab.answer_id[tw.SHAPES[scene.kind[k] - 1]]
    for j, q in enumerate(picked, start=1):
        b = vocab.tok.encode(q["question"] + suffix_tpl)
        a = [vocab.answer_id[q["answer"]], vocab.turn_end]
        seq = b + a
        answer_at.append(len(ids) + len(b) - 1)          # the position whose logits predict the answer
        ids += seq
        pos += list(range(len(prefix), len(prefix) + len(seq)))
        branch += [j] * len(seq)
        labels += [IGNORE] * (len(b) - 1) + a + [IGNORE]
        aux += [IGNORE] * len(seq)
        aux2 += [IGNORE] * len(seq)
    types = np.zeros(len(ids), np.int64)
    arr = np.array(ids, np.int64)
    types[arr == vocab.video] = 2
    types[arr == vocab.audio] = 3
    return {
        "ids": arr, "pos": np.array(pos, np.int64), "branch": np.array(branch, np.int64),
        "labels": np.array(labels, np.int64), "aux": np.array(aux, np.int64), "aux2": np.array(aux2, np.int64), "types": types, "block": block_ids(types),
        "answer_at": np.array(answer_at, np.int64),
        "answers": [vocab.answer_id[q["answer"]] for q in picked],
        "categories": [q["category"] for q in picked], "templates": [q["template"] for q in picked],
        "render": tw.scene_arrays(scene, order), "audio": tw.audio_frames(y), "seconds": seconds,
        "prefix_len": len(prefix),
    }


def block_ids(types: np.ndarray) -> np.ndarray:
    """-1 outside image/video runs, else the run's index (one bidirectional block per frame)."""
    vis = (types == 1) | (types == 2)
    starts = vis & ~np.concatenate([[False], vis[:-1]])
    return np.where(vis, np.cumsum(starts) - 1, -1)


def collate(examples: list, pad_id: int) -> dict:
    """Right-pads token-level arrays to one length; pads have branch -1."""
    T = max(len(e["ids"]) for e in examples)
    B = len(examples)

    def pad(key, fill):
        out = np.full((B, T), fill, np.int64)
        for i, e in enumerate(examples):
            out[i, : len(e[key])] = e[key]
        return out

    batch = {"ids": pad("ids", pad_id), "pos": pad("pos", 0), "branch": pad("branch", -1),
             "labels": pad("labels", IGNORE), "aux": pad("aux", IGNORE), "aux2": pad("aux2", IGNORE), "types": pad("types", 0),
             "block": pad("block", -1)}
    for i, e in enumerate(examples):   # pads continue the positions (harmless, never attended by real rows)
        n = len(e["ids"])
        batch["pos"][i, n:] = np.arange(n, T)
    batch["render"] = {k: np.stack([e["render"][k] for e in examples]) for k in examples[0]["render"]}
    batch["audio"] = np.stack([e["audio"] for e in examples])      # [B, L*25, 640]
    return batch


def mask_arrays(pos, branch, block, window: int):
    """Boolean attention masks [B, 1, T, T] (True = may attend) for the two layer types, the
    documented Gemma 4 intent (spec 5.5): full layers causal; sliding layers causal within the
    window, plus bidirectional inside each frame's block. Works on numpy arrays or torch tensors.
    'Causal' follows the token order; branches see the prefix and themselves only; the window is
    measured in position ids (what a separate prompt would have)."""
    q_idx = np_or_torch_arange(pos)[:, None]
    k_idx = np_or_torch_arange(pos)[None, :]
    bq, bk = branch[:, :, None], branch[:, None, :]
    base = (k_idx <= q_idx)[None] & ((bk == 0) | (bk == bq))
    blk_q, blk_k = block[:, :, None], block[:, None, :]
    same_block = (blk_q == blk_k) & (blk_q >= 0)
    in_window = (pos[:, :, None] - pos[:, None, :]) < window
    sliding = (base | same_block) & in_window
    return base[:, None], sliding[:, None]


def np_or_torch_arange(like):
    n = like.shape[1]
    if hasattr(like, "device"):
        import torch
        return torch.arange(n, device=like.device)
    return np.arange(n)
