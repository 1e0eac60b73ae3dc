#!/usr/bin/env python3
"""Writes the spoken-word bank the trainer uses: every toy word in every espeak-ng voice of
samples/toy/toyworld.py, as 16 kHz int16, with the same speak() the sample generator calls.
  /usr/bin/python3 scripts/toy/make_word_bank.py [out.npz]   (default scripts/toy/data/word_bank.npz)"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "samples", "toy"))
import toyworld as tw  # noqa: E402


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "data", "word_bank.npz")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    bank = tw.WordBank.from_espeak()
    bank.save(out)
    lens = [len(x) / tw.SAMPLE_RATE for x in bank.waves.values()]
    print(f"{out}: {len(lens)} clips, {min(lens):.2f}-{max(lens):.2f} s, {os.path.getsize(out)} bytes")
    # The bank must equal a fresh espeak-ng run (the sample generator speaks live).
    again = tw.speak(tw.WORDS[0], *tw.VOICES[0])
    assert np.array_equal(again, bank.waves[(tw.WORDS[0], 0)]), "espeak-ng output is not deterministic"


if __name__ == "__main__":
    main()
