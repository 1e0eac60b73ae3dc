"""The toy world: synthetic clips whose answers need both eyes and ears.

One module defines everything the toy model and its tests agree on, so that the sample generator
(samples/toy/make_sample.py, ffmpeg + espeak-ng), the trainer (scripts/toy/train.py, torch on the
GPU machine) and the end-to-end test (tests/demo/) cannot drift apart:

  * the scene: a clip of L whole seconds; each second shows at most one coloured shape (square,
    circle, triangle) on a plain coloured background and carries at most one sound event (a spoken
    word or a beep). Content is constant within a second, so any frame sampled in [k, k+1) shows
    second k, and every sound starts >= 80 ms after and ends >= 100 ms before a second boundary.
  * the renderer: frames drawn directly at 384x384, which is already the 70-token budget size
    (spec 2.1: f = sqrt(161280 / 384^2) > 1, floor(f*384/48)*48 = 384 -> 8x8 = 64 patches, no
    resize), so patches are exact pixel copies; the only difference from what avserve ingests is
    codec noise (H.264 4:2:0, AAC), which training imitates with augmentation.
  * the questions and their answers (one token each), in three categories.
  * the prompt layout avserve builds (chat template + the time-interleaved stream, design.md 1).
  * the tokenizer's vocabulary (a small Gemma-scheme BPE, written by scripts/toy/make_tokenizer.py).

Only numpy is needed here; render_frames() also runs on torch tensors (it uses operators only).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tempfile

import numpy as np

# ----------------------------------------------------------------------------------------------
# World constants.
FRAME_SIDE = 384                      # pixels; the 70-token budget size of a square frame
PATCH_SIDE = 48
GRID = FRAME_SIDE // PATCH_SIDE       # 8 -> 64 patches per frame
NUM_PATCHES = GRID * GRID
PATCH_DIM = PATCH_SIDE * PATCH_SIDE * 3
SAMPLE_RATE = 16000
AUDIO_FRAME = 640                     # samples per audio token (40 ms)
AUDIO_TOKENS_PER_S = SAMPLE_RATE // AUDIO_FRAME  # 25
MIN_SECONDS, MAX_SECONDS = 8, 12

COLOURS = {                           # name -> RGB in [0, 1]; none of them is grey
    "red": (0.90, 0.12, 0.12),
    "green": (0.10, 0.75, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.60, 0.20, 0.80),
    "orange": (1.00, 0.55, 0.05),
}
COLOUR_NAMES = list(COLOURS)
SHAPES = ["square", "circle", "triangle"]   # kind ids 1, 2, 3 (0 = no shape)
WORDS = ["apple", "river", "zebra", "hello", "music", "window"]
# espeak-ng voices of the word bank: every word is spoken at each (speed wpm, pitch) pair.
VOICE_SPEEDS = (140, 165, 190)
VOICE_PITCHES = (30, 50, 70)
VOICES = [(s, p) for s in VOICE_SPEEDS for p in VOICE_PITCHES]
MAX_WORD_SAMPLES = int(0.78 * SAMPLE_RATE)

CATEGORIES = ("vision", "audio", "av")
# Question templates: (category, id, text). {ts}, {shape} are filled in from the scene.
TEMPLATES = [
    ("vision", "colour_at", "What colour is the shape at {ts}?"),
    ("vision", "shape_at", "What shape is visible at {ts}?"),
    ("audio", "word_at", "Which word is spoken at {ts}?"),
    ("audio", "beep_when", "When is the beep heard?"),
    ("av", "word_while_shape", "Which word is spoken while the {shape} is visible?"),
    ("av", "colour_at_beep", "What colour is the shape when the beep is heard?"),
]


def timestamp(second: int) -> str:
    """MM:SS as avserve writes it before each segment (minutes may exceed 59)."""
    return f"{second // 60:02d}:{second % 60:02d}"


# ----------------------------------------------------------------------------------------------
# Scenes.
@dataclasses.dataclass
class Scene:
    seconds: int
    background: list                 # [3] RGB
    kind: list                       # [L] 0 none, 1 square, 2 circle, 3 triangle
    colour: list                     # [L] colour name or ""
    cx: list                         # [L] centre x, pixels
    cy: list                         # [L] centre y, pixels
    radius: list                     # [L] half-size, pixels
    sound: list                      # [L] "" | "beep" | a word
    voice: list                      # [L] index into VOICES for words, else -1
    sound_offset: list               # [L] start of the sound inside its second, seconds
    sound_gain: list                 # [L] peak amplitude of the sound
    beep_hz: float
    beep_len: float

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(d: dict) -> "Scene":
        return Scene(**d)

    def intervals(self):
        """Maximal runs of seconds showing the same shape: [(kind, colour, start, end)]."""
        runs, k = [], 0
        while k < self.seconds:
            if self.kind[k] == 0:
                k += 1
                continue
            start = k
            while k < self.seconds and self.kind[k] == self.kind[start] and self.colour[k] == self.colour[start]:
                k += 1
            runs.append((self.kind[start], self.colour[start], start, k))
        return runs


def _background(rng) -> list:
    while True:
        bg = rng.uniform(0.04, 0.38, size=3)
        if bg.max() - bg.min() >= 0.12:   # never grey: a flat grey patch has no variance for LN1
            return [round(float(v), 4) for v in bg]


def _spans(rng, L):
    """Shape intervals [(start, end)]: for L >= 8, 2-3 intervals of 2-4 s; shorter clips (used by
    the training curriculum only) get 1-2 intervals of 1-3 s. Gaps are 1-2 s."""
    if L >= 8:
        lo, hi, need, t = 2, 4, 2, int(rng.integers(0, 2))
    else:
        lo, hi, need, t = 1, min(3, L), 1, int(rng.integers(0, 2)) if L >= 3 else 0
    while True:
        spans, tt = [], t
        while True:
            d = int(rng.integers(lo, hi + 1))
            if tt + d > L or len(spans) == 3:
                break
            spans.append((tt, tt + d))
            tt += d + int(rng.integers(1, 3))
        if len(spans) >= need:
            return spans


def sample_scene(rng: np.random.Generator, seconds: int | None = None) -> Scene:
    """A random scene: shape intervals with gaps, one word in each interval, one beep in a free
    second (of an interval when one is free), sometimes a distractor word where no shape is shown."""
    L = int(seconds if seconds is not None else rng.integers(MIN_SECONDS, MAX_SECONDS + 1))
    spans = _spans(rng, L)
    kinds = rng.permutation(3)[: len(spans)] + 1
    colours = rng.choice(len(COLOUR_NAMES), size=len(spans), replace=False)
    s = Scene(seconds=L, background=_background(rng), kind=[0] * L, colour=[""] * L, cx=[0.0] * L,
              cy=[0.0] * L, radius=[0.0] * L, sound=[""] * L, voice=[-1] * L, sound_offset=[0.0] * L,
              sound_gain=[0.0] * L, beep_hz=round(float(rng.uniform(500, 1500)), 1),
              beep_len=round(float(rng.uniform(0.35, 0.6)), 3))
    for (a, b), kind, col in zip(spans, kinds, colours):
        r = float(rng.uniform(36, 72))
        for k in range(a, b):   # the shape moves: a new position every second
            s.kind[k], s.colour[k], s.radius[k] = int(kind), COLOUR_NAMES[col], round(r, 2)
            s.cx[k] = round(float(rng.uniform(r + 2, FRAME_SIDE - r - 2)), 2)
            s.cy[k] = round(float(rng.uniform(r + 2, FRAME_SIDE - r - 2)), 2)
    gaps = [k for k in range(L) if s.kind[k] == 0]
    n_words = len(spans) + int(rng.random() < 0.5 and len(gaps) > 0)
    words = [WORDS[i] for i in rng.choice(len(WORDS), size=n_words, replace=False)]
    for (a, b), w in zip(spans, words):
        s.sound[int(rng.integers(a, b))] = w
    if n_words > len(spans):
        s.sound[int(rng.choice(gaps))] = words[-1]
    free = [k for (a, b) in spans for k in range(a, b) if s.sound[k] == ""]
    free = free or [k for k in range(L) if s.sound[k] == ""]
    if free:
        s.sound[int(rng.choice(free))] = "beep"
    for k in range(L):
        if s.sound[k]:
            s.sound_offset[k] = round(float(rng.uniform(0.08, 0.2)), 3)
            s.sound_gain[k] = round(float(rng.uniform(0.35, 0.8)), 3)
            if s.sound[k] != "beep":
                s.voice[k] = int(rng.integers(0, len(VOICES)))
    return s


def questions(s: Scene) -> list:
    """Every well-defined question about the scene: dicts with category, template, question, answer."""
    out = []

    def add(tid, answer, **fill):
        cat, text = next((c, t) for c, i, t in TEMPLATES if i == tid)
        out.append({"category": cat, "template": tid, "question": text.format(**fill), "answer": answer})

    for k in range(s.seconds):
        if s.kind[k]:
            add("colour_at", s.colour[k], ts=timestamp(k))
            add("shape_at", SHAPES[s.kind[k] - 1], ts=timestamp(k))
        if s.sound[k] and s.sound[k] != "beep":
            add("word_at", s.sound[k], ts=timestamp(k))
    if "beep" in s.sound:
        beep = s.sound.index("beep")
        add("beep_when", timestamp(beep))
        if s.kind[beep]:
            add("colour_at_beep", s.colour[beep])
    for kind, _, a, b in s.intervals():
        words = [w for w in s.sound[a:b] if w and w != "beep"]
        if len(words) == 1:
            add("word_while_shape", words[0], shape=SHAPES[kind - 1])
    return out


def pick_questions(s: Scene, rng: np.random.Generator, per_category: int = 1) -> list:
    """A small balanced subset: `per_category` random questions of each category."""
    qs = questions(s)
    picked = []
    for cat in CATEGORIES:
        pool = [q for q in qs if q["category"] == cat]
        for i in rng.permutation(len(pool))[:per_category]:
            picked.append(pool[i])
    return picked


# ----------------------------------------------------------------------------------------------
# Rendering. Arrays may be numpy or torch: only operators and the passed `floor` are used.
def scene_arrays(s: Scene, frame_order=None) -> dict:
    """Per-second render parameters as numpy arrays; frame_order[k] = scene second shown at k."""
    order = list(range(s.seconds)) if frame_order is None else list(frame_order)
    col = [COLOURS[s.colour[j]] if s.kind[j] else (0.0, 0.0, 0.0) for j in order]
    return {
        "kind": np.array([s.kind[j] for j in order], np.float32),
        "colour": np.array(col, np.float32),
        "cx": np.array([s.cx[j] for j in order], np.float32),
        "cy": np.array([s.cy[j] for j in order], np.float32),
        "radius": np.array([s.radius[j] for j in order], np.float32),
        "background": np.tile(np.array(s.background, np.float32), (len(order), 1)),
    }


def render_frames(a: dict, yy, xx, floor):
    """Frames [..., T, H, W, 3] in [0,1], quantized to 8 bits like decoded video.

    a: kind/cx/cy/radius [..., T], colour/background [..., T, 3]; yy [H, 1], xx [1, W] pixel centres.
    """
    k = a["kind"][..., None, None]
    r = a["radius"][..., None, None]
    dx = xx - a["cx"][..., None, None]
    dy = yy - a["cy"][..., None, None]
    square = (abs(dx) <= r) & (abs(dy) <= r)
    circle = dx * dx + dy * dy <= r * r
    triangle = (dy >= -r) & (dy <= r) & (abs(dx) * 2 <= dy + r)   # apex up, base 2r wide
    m = (square & (k == 1)) | (circle & (k == 2)) | (triangle & (k == 3))
    m = m[..., None] * 1.0
    img = a["background"][..., None, None, :] * (1.0 - m) + a["colour"][..., None, None, :] * m
    return floor(img * 255.0 + 0.5) / 255.0


def pixel_grid(xp=np, **kw):
    side = FRAME_SIDE
    yy = xp.arange(side, **kw).reshape(side, 1) * 1.0 + 0.5
    xx = xp.arange(side, **kw).reshape(1, side) * 1.0 + 0.5
    return yy, xx


def patchify(img):
    """[..., 384, 384, 3] -> [..., 64, 6912]: row-major 8x8 grid, each patch HWC raster (spec 2.1)."""
    lead = tuple(img.shape[:-3])
    x = img.reshape(*lead, GRID, PATCH_SIDE, GRID, PATCH_SIDE, 3)
    n = len(lead)
    perm = tuple(range(n)) + (n, n + 2, n + 1, n + 3, n + 4)
    x = x.permute(*perm) if hasattr(x, "permute") else x.transpose(perm)
    return x.reshape(*lead, NUM_PATCHES, PATCH_DIM)


def patch_positions() -> np.ndarray:
    """[64, 2] (x = column, y = row) of each patch."""
    return np.array([(c, r) for r in range(GRID) for c in range(GRID)], np.int64)


# ----------------------------------------------------------------------------------------------
# Audio.
def speak(word: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng (voice en-us) -> 16 kHz mono int16, leading/trailing silence trimmed."""
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(speed), "-p", str(pitch), "--stdout", word],
                         check=True, capture_output=True).stdout
    raw = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "wav", "-i", "pipe:0",
                          "-ar", str(SAMPLE_RATE), "-ac", "1", "-f", "s16le", "pipe:1"],
                         input=wav, check=True, capture_output=True).stdout
    x = np.frombuffer(raw, np.int16)
    loud = np.nonzero(np.abs(x.astype(np.int32)) > 400)[0]
    x = x[max(loud[0] - 160, 0): loud[-1] + 160] if len(loud) else x[:0]
    return x[:MAX_WORD_SAMPLES].copy()


class WordBank:
    """The spoken words, one waveform per (word, voice). Built by espeak-ng (speak()) or loaded
    from the .npz that scripts/toy/make_word_bank.py wrote with the same function."""

    def __init__(self, waves: dict):
        self.waves = waves                       # (word, voice index) -> int16 [n]

    @staticmethod
    def from_espeak(words=WORDS) -> "WordBank":
        return WordBank({(w, v): speak(w, *VOICES[v]) for w in words for v in range(len(VOICES))})

    @staticmethod
    def load(path: str) -> "WordBank":
        z = np.load(path)
        return WordBank({(k.rsplit("_", 1)[0], int(k.rsplit("_", 1)[1])): z[k] for k in z.files})

    def save(self, path: str) -> None:
        np.savez_compressed(path, **{f"{w}_{v}": x for (w, v), x in self.waves.items()})

    def get(self, word: str, voice: int) -> np.ndarray:
        return self.waves[(word, voice)].astype(np.float32) / 32768.0


def render_audio(s: Scene, bank: WordBank, rng: np.random.Generator, noise_rms: float = 0.003,
                 shift_s: int = 0) -> np.ndarray:
    """The soundtrack, float32 [seconds * 16000] in [-1, 1]: a white-noise floor (so silence is
    well defined after the per-frame RMSNorm and lossy codecs), words and one beep.
    shift_s > 0 delays everything by that many seconds (the misaligned test condition)."""
    n = s.seconds * SAMPLE_RATE
    y = np.zeros(n + shift_s * SAMPLE_RATE, np.float32)
    for k, what in enumerate(s.sound):
        if not what:
            continue
        start = int(round((k + shift_s + s.sound_offset[k]) * SAMPLE_RATE))
        if what == "beep":
            t = np.arange(int(s.beep_len * SAMPLE_RATE)) / SAMPLE_RATE
            w = np.sin(2 * np.pi * s.beep_hz * t).astype(np.float32)
            fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01).astype(np.float32)
            w *= fade
        else:
            w = bank.get(what, s.voice[k])
            w = w / max(float(np.abs(w).max()), 1e-6)
        y[start:start + len(w)] += s.sound_gain[k] * w[: len(y) - start]
    y = y[:n]
    y += rng.normal(0.0, noise_rms, size=n).astype(np.float32)
    return np.clip(y, -1.0, 1.0)


def audio_frames(y: np.ndarray) -> np.ndarray:
    """[N, 640] with N = ceil(len / 640), zero-padded tail (spec 3.2)."""
    n = -(-len(y) // AUDIO_FRAME)
    out = np.zeros(n * AUDIO_FRAME, np.float32)
    out[: len(y)] = y
    return out.reshape(n, AUDIO_FRAME)


# ----------------------------------------------------------------------------------------------
# Prompt layout: what avserve sends the model (design.md 1 + spec 6). Keep it in this one place.
@dataclasses.dataclass
class Layout:
    newlines_around_video: bool = True   # chat template's video item is "\n\n<|video|>\n\n"
    empty_thought: bool = True           # thinking off: "<|channel>thought\n<channel|>" after model turn
    audio: bool = True                   # segments carry an audio block


def stream_text(seconds: int, layout: Layout = Layout()) -> str:
    seg = []
    for k in range(seconds):
        s = f"{timestamp(k)} <|image>" + "<|video|>" * NUM_PATCHES + "<image|>"
        if layout.audio:
            s += "<|audio>" + "<|audio|>" * AUDIO_TOKENS_PER_S + "<audio|>"
        seg.append(s)
    return " ".join(seg)


def prompt_text(seconds: int, question: str, layout: Layout = Layout()) -> str:
    """Everything up to the model's first answer token."""
    video = stream_text(seconds, layout)
    if layout.newlines_around_video:
        video = "\n\n" + video + "\n\n"
    p = "<bos><|turn>user\n" + video + question.strip() + "<turn|>\n<|turn>model\n"
    if layout.empty_thought:
        p += "<|channel>thought\n<channel|>"
    return p


def answer_text(answer: str) -> str:
    return answer + "<turn|>"


# ----------------------------------------------------------------------------------------------
# Tokenizer: a Gemma-scheme BPE over a small vocabulary (see scripts/toy/make_tokenizer.py).
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<|turn>", "<turn|>", "<|channel>",
                  "<channel|>", "<|think|>", "<|image>", "<image|>", "<|image|>", "<|video|>", "<|audio>",
                  "<audio|>", "<|audio|>", "<|tool>", "<tool|>", "<|tool_call>", "<tool_call|>",
                  "<|tool_response>", "<tool_response|>", '<|"|>']
SPACE = "\u2581"


def _word_list():
    words = set(COLOUR_NAMES) | set(SHAPES) | set(WORDS)
    for _, _, text in TEMPLATES:
        for w in text.replace("?", " ").replace("{ts}", " ").replace("{shape}", " ").split():
            words.add(w)
    words |= {"a", "an", "and", "of", "in", "on", "this", "video", "what", "which", "when", "is", "are",
              "say", "said", "does", "do", "sound", "colour", "color", "shape", "word", "beep", "heard",
              "seen", "time", "first", "last", "there", "describe", "Describe", "What", "Which", "When",
              "user", "model", "thought", "system"}
    return sorted(words)


def _bpe_pieces(text: str, ranks: dict) -> list:
    """BPE as the `tokenizers` library applies it: repeatedly merge the adjacent pair of lowest
    rank (leftmost on ties) until none applies."""
    parts = list(text)
    while len(parts) > 1:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get((parts[i], parts[i + 1]))
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def vocab_and_merges():
    """(pieces in id order, merges as [left, right] pairs in rank order).

    Whole words exist as "▁word" (after a space) and "word" (after a newline, or as an answer);
    timestamps MM:SS of minute 00 are single pieces. Merges are found by encoding each word with the
    merges so far and, while it is not one piece, adding a merge of its leftmost pair at the lowest
    priority. A merge added later can never fire inside an earlier word (an earlier merge always
    applies there first), so every listed word is one token. No piece has "▁" after its first
    character, so text splits into independent spans at every space.
    """
    pieces = list(SPECIAL_TOKENS) + [f"<0x{b:02X}>" for b in range(256)]
    pieces += [chr(c) for c in range(33, 127)] + [SPACE, "\n", "\t"]
    have = set(pieces)
    merges, ranks = [], {}

    def build(word):
        while True:
            parts = _bpe_pieces(word, ranks)
            if len(parts) == 1:
                return
            left, right = parts[0], parts[1]
            ranks[(left, right)] = len(merges)
            merges.append([left, right])
            if left + right not in have:
                have.add(left + right)
                pieces.append(left + right)

    words = _word_list()
    for w in words:
        build(SPACE + w)
    for w in words:
        build(w)
    build("\n\n")
    for sec in range(60):
        build(timestamp(sec))
    return pieces, merges


def tokenizer_json() -> dict:
    pieces, merges = vocab_and_merges()
    bos = pieces.index("<bos>")
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, t in enumerate(SPECIAL_TOKENS)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious",
                          "invert": False},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<bos>", "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<bos>": {"id": "<bos>", "ids": [bos], "tokens": ["<bos>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": {p: i for i, p in enumerate(pieces)}, "merges": merges},
    }


class ToyTokenizer:
    """A small reference encoder of tokenizer_json() (specials first, then BPE by merge rank,
    byte fallback). The trainer checks it against the `tokenizers` library on the GPU machine."""

    def __init__(self, tj: dict | None = None):
        tj = tj or tokenizer_json()
        self.vocab = tj["model"]["vocab"]
        self.ranks = {tuple(m): i for i, m in enumerate(tj["model"]["merges"])}
        self.specials = sorted((a["content"] for a in tj["added_tokens"]), key=len, reverse=True)
        self.id_to_piece = {i: p for p, i in self.vocab.items()}

    def _bpe(self, text: str) -> list:
        parts = _bpe_pieces(text, self.ranks)
        ids = []
        for p in parts:
            if p in self.vocab:
                ids.append(self.vocab[p])
            else:
                ids += [self.vocab[f"<0x{b:02X}>"] for b in p.encode("utf-8")]
        return ids

    def encode(self, text: str) -> list:
        ids, i, start = [], 0, 0
        while i < len(text):
            hit = next((s for s in self.specials if text.startswith(s, i)), None) if text[i] == "<" else None
            if hit is None:
                i += 1
                continue
            if i > start:
                ids += self._bpe(text[start:i].replace(" ", SPACE))
            ids.append(self.vocab[hit])
            i += len(hit)
            start = i
        if start < len(text):
            ids += self._bpe(text[start:].replace(" ", SPACE))
        return ids

    def decode(self, ids) -> str:
        return "".join(self.id_to_piece[i] for i in ids).replace(SPACE, " ")


def load_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)
