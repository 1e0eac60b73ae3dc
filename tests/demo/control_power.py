#!/usr/bin/env python3
"""How often e2e_accuracy.py's pass criteria fail on seed luck alone, by resampling measured clips.

A clip (one seed: its aligned, shifted and shuffled versions together) is the unit, because its questions
move together. Draws 27 clips with replacement from the measured ones, lets the first `controls` of them
count as control clips, and applies e2e_accuracy.check() exactly as the test does.

  tests/demo/control_power.py --summarize run1.json [run2.json ...] > clips.json   (from e2e_accuracy.py --json)
  tests/demo/control_power.py clips.json [--trials 10000] [--controls 12 27]

scripts/toy/runs/e2e_run6_clips.json holds the model card's run 6 (4 runs of 27 clips, every clip a control).
"""
import argparse
import importlib.util
import json
import os
import random
import sys

spec = importlib.util.spec_from_file_location("e2e", os.path.join(os.path.dirname(__file__), "e2e_accuracy.py"))
e2e = importlib.util.module_from_spec(spec)
spec.loader.exec_module(e2e)


def summarize(paths):
    """Per clip, per condition and category: [correct, asked]."""
    clips = {}
    for path in paths:
        for r in json.load(open(path))["rows"]:
            c = clips.setdefault(str(r["seed"]), {}).setdefault(r["condition"], {}).setdefault(r["category"], [0, 0])
            c[0] += bool(r["correct"])
            c[1] += 1
    return clips


def rows_of(index, clip, with_controls):
    out = []
    for cond, cats in clip.items():
        if cond != "aligned" and not with_controls:
            continue
        for cat, (hit, n) in cats.items():
            out += [{"seed": index, "condition": cond, "category": cat, "correct": i < hit} for i in range(n)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--summarize", action="store_true", help="print the per-clip counts of e2e --json files")
    ap.add_argument("--clips", type=int, default=27)
    ap.add_argument("--controls", type=int, nargs="+", default=[12, 27])
    ap.add_argument("--trials", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.summarize:
        json.dump(summarize(a.files), sys.stdout, separators=(",", ":"), sort_keys=True)
        print()
        return
    clips = {}
    for path in a.files:
        clips.update(json.load(open(path)))
    pool = [c for c in clips.values() if all(cond in c for cond in e2e.CONDITIONS)]
    print(f"{len(pool)} clips with every condition measured")
    rng = random.Random(a.seed)
    for controls in a.controls:
        fails, why = 0, {}
        for _ in range(a.trials):
            rows = []
            for i in range(a.clips):
                rows += rows_of(i, rng.choice(pool), i < controls)
            problems = e2e.check(e2e.score(rows), rows)
            fails += bool(problems)
            for p in problems:
                key = p.split(" accuracy")[0]
                why[key] = why.get(key, 0) + 1
        detail = ", ".join(f"{k} {v / a.trials:.2%}" for k, v in sorted(why.items()))
        print(f"{controls:3d} control clips of {a.clips}: fails {fails / a.trials:.2%} of {a.trials} runs ({detail})")


if __name__ == "__main__":
    main()
