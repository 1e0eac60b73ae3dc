#!/usr/bin/env python3
"""Unit checks of the toy world that the model, the demo and the e2e test share (fast, numpy only).

  /usr/bin/python3 tests/demo/toyworld_test.py
"""
import json
import os
import sys
import unittest

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "samples", "toy"))
sys.path.insert(0, os.path.join(ROOT, "scripts", "toy"))
import toydata as td  # noqa: E402
import toyworld as tw  # noqa: E402

MODEL = os.path.join(ROOT, "deploy", "toy-model")


class ToyWorldTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tj = tw.load_json(os.path.join(MODEL, "tokenizer.json"))
        cls.tok = tw.ToyTokenizer(cls.tj)
        cls.config = tw.load_json(os.path.join(MODEL, "config.json"))

    def test_committed_tokenizer_is_the_generated_one(self):
        self.assertEqual(self.tj, json.loads(json.dumps(tw.tokenizer_json())))

    def test_config_ids_match_tokenizer(self):
        v = self.tj["model"]["vocab"]
        c = self.config
        self.assertEqual(c["text_config"]["vocab_size"], len(v))
        for key, tok in (("boi_token_id", "<|image>"), ("eoi_token_id", "<image|>"), ("video_token_id", "<|video|>"),
                         ("image_token_id", "<|image|>"), ("boa_token_id", "<|audio>"),
                         ("eoa_token_index", "<audio|>"), ("audio_token_id", "<|audio|>")):
            self.assertEqual(c[key], v[tok], key)
        self.assertEqual(c["eos_token_id"], [v["<eos>"], v["<turn|>"]])

    def test_every_answer_is_one_token_and_words_are_whole(self):
        vocab = td.Vocab(self.tok)
        self.assertEqual(len(vocab.answer_id), len(set(vocab.answer_id.values())))
        ids = self.tok.encode("What colour is the shape at 00:07?")
        self.assertEqual([self.tok.id_to_piece[i] for i in ids],
                         ["What", "\u2581colour", "\u2581is", "\u2581the", "\u2581shape", "\u2581at", "\u2581", "00:07", "?"])

    def test_stream_tokenizes_piecewise_like_whole(self):
        # avserve tokenizes "MM:SS " pieces and the template text separately (pipeline/interleaver.h).
        text = tw.prompt_text(3, "Which word is spoken at 00:01?") + tw.answer_text("apple")
        pre, suf = tw.prompt_text(3, "\x00").split("\x00")
        self.assertEqual(self.tok.encode(text)[: len(self.tok.encode(pre[:-2]))],
                         self.tok.encode(pre[:-2]))
        joined = self.tok.encode(pre[:-2]) + self.tok.encode("\n\nWhich word is spoken at 00:01?" + suf)
        self.assertEqual(joined + self.tok.encode("apple<turn|>"), self.tok.encode(text))

    def test_questions_are_well_defined(self):
        rng = np.random.default_rng(5)
        for _ in range(300):
            s = tw.sample_scene(rng)
            self.assertTrue(tw.MIN_SECONDS <= s.seconds <= tw.MAX_SECONDS)
            self.assertEqual(s.sound.count("beep"), 1)
            qs = tw.questions(s)
            texts = [q["question"] for q in qs]
            self.assertEqual(len(texts), len(set(texts)), "a question with two answers")
            for cat in tw.CATEGORIES:
                self.assertGreaterEqual(len([q for q in qs if q["category"] == cat]), 3, cat)
            for q in qs:
                if q["template"] == "word_while_shape":
                    kind = tw.SHAPES.index(q["question"].split(" the ")[1].split(" is")[0]) + 1
                    seconds = [k for k in range(s.seconds) if s.kind[k] == kind]
                    self.assertIn(q["answer"], [s.sound[k] for k in seconds])

    def test_patchify_is_row_major_hwc(self):
        img = np.arange(tw.FRAME_SIDE * tw.FRAME_SIDE * 3, dtype=np.float64).reshape(tw.FRAME_SIDE, tw.FRAME_SIDE, 3)
        p = tw.patchify(img)
        self.assertEqual(p.shape, (64, 6912))
        r, c, y, x, ch = 2, 5, 7, 11, 1
        self.assertEqual(p[r * tw.GRID + c, (y * 48 + x) * 3 + ch], img[48 * r + y, 48 * c + x, ch])

    def test_renderer_draws_the_scene(self):
        s = tw.sample_scene(np.random.default_rng(9))
        yy, xx = tw.pixel_grid(np)
        frames = tw.render_frames(tw.scene_arrays(s), yy, xx, np.floor)
        for k in range(s.seconds):
            centre = frames[k, int(s.cy[k]), int(s.cx[k])]
            want = tw.COLOURS[s.colour[k]] if s.kind[k] else s.background
            np.testing.assert_allclose(centre, want, atol=1 / 255)


if __name__ == "__main__":
    unittest.main()
