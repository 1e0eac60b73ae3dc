#!/usr/bin/env python3
"""Goldens for ingest's resize + patchify against transformers' Gemma4Unified image processor.

Run where transformers 5.17 + torch are installed (the GPU machine):
    python3 tests/data/ingest/make_image_goldens.py OUT_DIR
It writes image_goldens.json (cases: image size, budget, grid, per-patch means) and
image_goldens.bin (uint8 round(255 * pixel_values) sampled every STRIDE-th element of each case's
[num_patches, 6912] block). The input images are defined by a formula (TestImage) that
tests/ingest/image_parity_test.cc reproduces exactly, so no image is stored.
"""
import json
import os
import sys

import numpy as np

SIZES = [(96, 160), (333, 517), (50, 400), (720, 1280)]  # (height, width)
BUDGETS = [70, 140, 280, 560, 1120]
STRIDE = 127


def test_image(height, width, seed):
    """[H, W, 3] uint8: channel gradients plus hashed noise in [0, 63] (32-bit integer hash)."""
    y, x = np.meshgrid(np.arange(height, dtype=np.uint64), np.arange(width, dtype=np.uint64), indexing="ij")
    out = np.zeros((height, width, 3), dtype=np.uint8)
    mask = np.uint64(0xFFFFFFFF)
    for c in range(3):
        h = (x * np.uint64(374761393) + y * np.uint64(668265263) + np.uint64(c * 1442695040 + seed * 2654435761)) & mask
        h = ((h ^ (h >> np.uint64(13))) * np.uint64(1274126177)) & mask
        h = h ^ (h >> np.uint64(16))
        noise = (h & np.uint64(63)).astype(np.int64)
        if c == 0:
            base = x.astype(np.int64) * 255 // max(width - 1, 1)
        elif c == 1:
            base = y.astype(np.int64) * 255 // max(height - 1, 1)
        else:
            base = (x + y).astype(np.int64) * 255 // max(width + height - 2, 1)
        out[..., c] = np.minimum(base * 3 // 4 + noise, 255).astype(np.uint8)
    return out


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "."
    import torch
    import transformers
    from transformers.models.gemma4_unified.image_processing_gemma4_unified import Gemma4UnifiedImageProcessor

    cases, blob = [], bytearray()
    for index, (height, width) in enumerate(SIZES):
        image = test_image(height, width, seed=index)
        for budget in BUDGETS:
            proc = Gemma4UnifiedImageProcessor(max_soft_tokens=budget)
            feats = proc(images=[torch.from_numpy(image).permute(2, 0, 1).contiguous()], return_tensors="pt")
            n = int(feats["num_soft_tokens_per_image"][0])
            pixels = feats["pixel_values"][0, :n].float().numpy()  # [n, 6912] in [0, 1]
            pos = feats["image_position_ids"][0, :n].numpy()  # [n, 2] (x = column, y = row)
            rows, cols = int(pos[:, 1].max()) + 1, int(pos[:, 0].max()) + 1
            assert rows * cols == n, (rows, cols, n)
            assert (pos[:, 0] == np.arange(n) % cols).all() and (pos[:, 1] == np.arange(n) // cols).all()
            quantized = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8).reshape(-1)
            sample = quantized[::STRIDE]
            cases.append({
                "image": index, "height": height, "width": width, "seed": index, "budget": budget,
                "rows": rows, "cols": cols, "offset": len(blob), "count": int(sample.size), "stride": STRIDE,
                "patch_means": [round(float(v), 6) for v in pixels.mean(axis=1)],
            })
            blob += sample.tobytes()
            print(f"image {index} {height}x{width} budget {budget}: grid {rows}x{cols}", flush=True)
    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "cases": cases}
    with open(os.path.join(out_dir, "image_goldens.json"), "w") as f:
        json.dump(meta, f, separators=(",", ":"))
    with open(os.path.join(out_dir, "image_goldens.bin"), "wb") as f:
        f.write(bytes(blob))


if __name__ == "__main__":
    main()
