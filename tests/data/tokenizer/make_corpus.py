#!/usr/bin/env python3
"""Writes the tokenizer test corpus (>= 1 MB, deterministic) as a list of byte documents.

Usage: make_corpus.py OUT.bin
Format (little-endian): b"AVCP", u32 num_docs, then per document u32 num_bytes + bytes.
The documents mix scripts, code, numbers, emoji, whitespace runs, control-token spellings and
invalid UTF-8 (which the goldens' generator decodes with replacement, as Python and JS callers of
the `tokenizers` library must). A private xorshift generator keeps it identical across Python versions.
"""
import struct
import sys

WORDS = {
    "en": "the quick brown fox jumps over lazy dog while engineers measure latency of streaming video "
          "models and nobody expects tokenizers to agree byte for byte unless they are tested".split(),
    "de": "Größe Straße über schön Mädchen Fußgängerübergänge Qualitätssicherung Bäckerei äußerst "
          "Überraschung Donaudampfschifffahrtsgesellschaft".split(),
    "fr": "été déjà où garçon français naïve cœur Noël crème brûlée hôpital élève façade".split(),
    "es": "niño año mañana corazón acción canción pingüino ¿qué ¡hola información".split(),
    "ru": "Привет мир как дела сегодня хорошая погода быстрая лиса прыгает через ленивую собаку".split(),
    "el": "Γειά σου κόσμε καλημέρα ευχαριστώ πολύ θάλασσα φιλοσοφία".split(),
    "ar": "مرحبا بالعالم كيف حالك اليوم الطقس جميل القراءة مفيدة".split(),
    "he": "שלום עולם מה שלומך היום מזג האוויר יפה".split(),
    "hi": "नमस्ते दुनिया आप कैसे हैं आज मौसम अच्छा है किताब पढ़ना".split(),
    "zh": "你好 世界 今天 天气 很好 我们 一起 学习 机器 翻译 模型 视频 声音 时间".split(),
    "ja": "こんにちは 世界 今日は いい 天気 ですね カタカナ テスト 東京 ラーメン 食べたい".split(),
    "ko": "안녕하세요 세계 오늘 날씨 좋네요 한국어 토크나이저 테스트".split(),
    "th": "สวัสดี ชาวโลก วันนี้ อากาศ ดี มาก ภาษาไทย".split(),
    "vi": "Xin chào thế giới hôm nay trời đẹp quá tiếng Việt người".split(),
    "am": "ሰላም ዓለም እንዴት ነህ".split(),
    "ka": "გამარჯობა მსოფლიო".split(),
    "ta": "வணக்கம் உலகம் இன்று".split(),
}
CODE = [
    "int main(int argc, char** argv) {\n  std::vector<int32_t> ids;\n  for (int i = 0; i < argc; ++i) {\n"
    "    ids.push_back(std::atoi(argv[i]));\n  }\n  return ids.empty() ? 1 : 0;\n}\n",
    "def tokenize(text: str) -> list[int]:\n    \"\"\"Docstring.\"\"\"\n    if not text:\n        return []\n"
    "    return [ord(c) % 256 for c in text]  # comment\n",
    '{"model": {"type": "BPE", "vocab": {"a": 1, "b": 2}}, "merges": [["a", "b"]], "x": null}',
    "<html><body><div class=\"x\"><table><tr><td>1</td><td>2</td></tr></table><b>bold</b> <i>it</i>"
    "<code>x = y</code></div></body></html>",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC LIMIT 10;",
    "fn main() { let v: Vec<u32> = (0..10).map(|x| x * x).collect(); println!(\"{:?}\", v); }",
    "#!/bin/bash\nset -euo pipefail\nfor f in *.mp4; do ffmpeg -i \"$f\" -vf fps=1 out_%04d.png; done\n",
    "\tif (x) {\n\t\treturn y;\n\t}\r\n\r\n\t\t\t// tabs\n",
    "$ E = mc^2 $ and \\frac{a}{b} + \\sum_{i=0}^{n} x_i^2 \\leq \\sqrt{\\pi}",
]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "🇯🇵", "❤️", "🏳️‍🌈", "🤖", "🎬", "🔊", "✅", "🧪", "🫠", "1️⃣", "©", "™"]
SPECIALS = ["<bos>", "<eos>", "<pad>", "<|turn>", "<turn|>", "<|image>", "<|image|>", "<image|>", "<|video|>",
            "<|audio>", "<|audio|>", "<audio|>", "<|think|>", "<|channel>", "<channel|>", "<|\"|>",
            "<start_of_turn>", "<end_of_turn>", "<unused7>", "<|tu", "<turn", "<0x41>", "<0xZZ>", "▁", "▁▁▁",
            "<mask>", "[multimodal]", "<table>", "</td>", "<b>", "<|tool_call>", "<tool_call|>"]
WHITESPACE = [" ", "  ", "   ", "\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "\u2009",
              "\u200b", " " * 40, "\n" * 35, "\t" * 33, " \t \t", "\x0b", "\x0c"]
INVALID = [b"\xff", b"\xc0\xaf", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80\x80", b"\xf0\x9f\x98",
           b"\xc3", b"\xe0\x80\xaf", b"\xfe\xfe", b"abc\xe2\x28\xa1def", b"\xf8\x88\x80\x80\x80"]


class XorShift:
    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFFFFFFFFFF or 1

    def next(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        self.state = x
        return x

    def below(self, n):
        return self.next() % n

    def choice(self, seq):
        return seq[self.below(len(seq))]


def number(rng):
    kind = rng.below(6)
    if kind == 0:
        return str(rng.below(10 ** rng.below(12)))
    if kind == 1:
        return f"{rng.below(100000)}.{rng.below(1000):03d}"
    if kind == 2:
        return f"{rng.below(28) + 1:02d}/{rng.below(12) + 1:02d}/{1900 + rng.below(200)}"
    if kind == 3:
        return f"{rng.below(60):02d}:{rng.below(60):02d} "
    if kind == 4:
        return f"-{rng.below(1000)}e{rng.below(40)}"
    return f"+1 ({rng.below(900) + 100}) {rng.below(900) + 100}-{rng.below(9000) + 1000}"


def random_codepoint(rng):
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
              (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x2BFF), (0x3040, 0x30FF), (0x4E00, 0x9FFF),
              (0xAC00, 0xD7A3), (0xE000, 0xE0FF), (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0x10000, 0x1007F),
              (0x300, 0x36F), (0xFFF0, 0xFFFD), (0xF0000, 0xF00FF), (0x1, 0x1F)]
    lo, hi = rng.choice(blocks)
    return chr(lo + rng.below(hi - lo + 1))


def sentence(rng):
    lang = rng.choice(sorted(WORDS))
    words = [rng.choice(WORDS[lang]) for _ in range(3 + rng.below(15))]
    sep = "" if lang in ("zh", "ja", "th") and rng.below(2) else " "
    return sep.join(words) + rng.choice([".", "!", "?", ",", "", "。", "…"])


def fragment(rng):
    kind = rng.below(20)
    if kind < 8:
        return sentence(rng).encode()
    if kind < 10:
        return rng.choice(CODE).encode()
    if kind < 12:
        return number(rng).encode()
    if kind == 12:
        return "".join(rng.choice(EMOJI) for _ in range(1 + rng.below(5))).encode()
    if kind == 13:
        return rng.choice(SPECIALS).encode()
    if kind in (14, 15):
        return rng.choice(WHITESPACE).encode()
    if kind == 16:
        return rng.choice(INVALID)
    if kind == 17:
        return "".join(random_codepoint(rng) for _ in range(1 + rng.below(12))).encode("utf-8", "surrogatepass")
    if kind == 18:
        return bytes([rng.below(256) for _ in range(1 + rng.below(6))])
    return (rng.choice(["a", "ab", "x", "0", "=", "-", "_", "ha", ".", "▁"]) * (2 + rng.below(60))).encode()


def documents():
    rng = XorShift(0x5EED1234ABCD)
    docs = [b"", b" ", b"a", b"Hello world", b"  leading and trailing  ", b"\n", b"\xff", "▁".encode(),
            " ".join(["word"] * 5000).encode(),                      # one long line
            ("x" * 20000).encode(), (" " * 3000).encode(), ("\n" * 100).encode(),
            ("9" * 5000).encode(), "".join(EMOJI * 50).encode()]
    total = sum(map(len, docs))
    while total < 1_150_000:
        doc = b"".join(fragment(rng) + rng.choice([b" ", b"", b"\n", b" "]) for _ in range(1 + rng.below(40)))
        docs.append(doc)
        total += len(doc)
    return docs


def main():
    docs = documents()
    with open(sys.argv[1], "wb") as out:
        out.write(b"AVCP" + struct.pack("<I", len(docs)))
        for doc in docs:
            out.write(struct.pack("<I", len(doc)) + doc)
    print(f"{len(docs)} documents, {sum(map(len, docs))} bytes")


if __name__ == "__main__":
    main()
