#!/usr/bin/env python3
"""Records transformers' bf16 intermediate activations on the golden prompt and checks each op's
rounding against candidate formulas (finds where a bf16 reimplementation must round).

Run on the GPU machine (torch + transformers 5.17; everything on its CPU), from the repo root:
    python3 tests/data/engine/dump_hf_activations.py OUT_DIR [CHECKPOINT_DIR]
Writes OUT_DIR/hf_acts.npz (every recorded tensor as fp32, exact for bf16) and prints, per op kind,
how many output elements each candidate formula reproduces bit-exactly.
"""
import inspect
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_tiny_checkpoints as mk  # noqa: E402


def log(*a):
    print(*a, flush=True)


def load_inputs(torch, gdir):
    meta = json.load(open(os.path.join(gdir, "golden.json")))
    nf = meta["vision"]["num_frames"]
    ppf = meta["vision"]["patches_per_frame"]
    pix = np.fromfile(os.path.join(gdir, "vision_u8.bin"), dtype=np.uint8).reshape(nf, ppf, mk.PATCH_DIM)
    audio = np.fromfile(os.path.join(gdir, "audio_f32.bin"), dtype=np.float32).reshape(-1, 640)
    vpos = np.array(meta["vision"]["positions_xy"], dtype=np.int64)
    media = dict(
        pixel_values_videos=torch.from_numpy(pix).float().div(255.0).unsqueeze(0),
        video_position_ids=torch.from_numpy(np.stack([vpos] * nf)).long().unsqueeze(0),
        input_features=torch.from_numpy(audio).reshape(2, -1, 640),
        input_features_mask=torch.ones(2, audio.shape[0] // 2, dtype=torch.bool))
    return meta, media


def mismatches(torch, a, b):
    a, b = a.float(), b.float()
    return int((a != b).sum()), a.numel(), float((a - b).abs().max())


def main():
    out = sys.argv[1]
    ckpt = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "tiny")
    os.makedirs(out, exist_ok=True)
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import Gemma4UnifiedForConditionalGeneration
    from transformers.models.gemma4_unified import modeling_gemma4_unified as mg
    torch.set_num_threads(8)
    log("torch", torch.__version__, "transformers", transformers.__version__,
        "cpu capability", torch.backends.cpu.get_cpu_capability())
    from transformers.activations import ACT2FN
    act = ACT2FN["gelu_pytorch_tanh"]
    log("gelu_pytorch_tanh:", type(act), inspect.getsource(type(act).forward))

    meta, media = load_inputs(torch, os.path.join(HERE, "golden"))
    model = Gemma4UnifiedForConditionalGeneration.from_pretrained(
        ckpt, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    log("dtypes:", sorted({(n.split(".")[-1], str(b.dtype)) for n, b in model.named_buffers()}))
    rec = {}

    def put(name, t):
        rec[name] = t.detach().float().cpu().numpy().copy()

    # RoPE and SDPA calls, in call order (per layer: q rope, k rope, sdpa).
    calls = {"rope": [], "sdpa": []}
    orig_rope = mg.apply_rotary_pos_emb

    def rope(x, cos, sin, unsqueeze_dim=1):
        y = orig_rope(x, cos, sin, unsqueeze_dim)
        calls["rope"].append((x, cos, sin, y, unsqueeze_dim))
        return y
    mg.apply_rotary_pos_emb = rope
    orig_sdpa = F.scaled_dot_product_attention

    def sdpa(q, k, v, attn_mask=None, **kw):
        y = orig_sdpa(q, k, v, attn_mask=attn_mask, **kw)
        calls["sdpa"].append((q, k, v, attn_mask, kw, y))
        return y
    F.scaled_dot_product_attention = sdpa
    torch.nn.functional.scaled_dot_product_attention = sdpa

    hooks = []
    for name, mod in model.named_modules():
        if not name:
            continue

        def hook(m, inp, outp, name=name):
            if isinstance(outp, torch.Tensor):
                put(name + ":out", outp)
            if inp and isinstance(inp[0], torch.Tensor) and len(list(m.children())) == 0:
                put(name + ":in", inp[0])
        hooks.append(mod.register_forward_hook(hook))

    ids, types = meta["prompt1"]["ids"], meta["prompt1"]["types"]
    with torch.no_grad():
        o = model(input_ids=torch.tensor([ids]), mm_token_type_ids=torch.tensor([types]),
                  attention_mask=mk.masks(torch, types, "A", torch.bfloat16), use_cache=False, **media)
    put("logits", o.logits[0])
    golden = np.fromfile(os.path.join(HERE, "golden", "bf16_p1_A.bin"), dtype=np.float32)
    log("this run vs committed golden bf16_p1_A: max|d| =",
        float(np.abs(rec["logits"].reshape(-1) - golden).max()))
    for h in hooks:
        h.remove()
    mg.apply_rotary_pos_emb = orig_rope
    F.scaled_dot_product_attention = orig_sdpa
    torch.nn.functional.scaled_dot_product_attention = orig_sdpa

    rot = model.model.language_model.rotary_emb
    for lt in ("full_attention", "sliding_attention"):
        put(f"inv_freq_{lt}", getattr(rot, f"{lt}_inv_freq"))
        log(lt, "inv_freq dtype", getattr(rot, f"{lt}_inv_freq").dtype)
    check_rope(torch, calls["rope"], put)
    check_sdpa(torch, calls["sdpa"], put, orig_sdpa)
    check_leaf_ops(torch, model, rec)
    np.savez_compressed(os.path.join(out, "hf_acts.npz"), **rec)
    log("saved", len(rec), "tensors")


def bf(torch, x):
    return x.to(torch.bfloat16).float()


def check_rope(torch, calls, put):
    for i, (x, cos, sin, y, ud) in enumerate(calls):
        put(f"rope{i}:x", x)
        put(f"rope{i}:cos", cos)
        put(f"rope{i}:sin", sin)
        put(f"rope{i}:y", y)
        xf, c, s = x.float(), cos.float().unsqueeze(ud), sin.float().unsqueeze(ud)
        h = xf.shape[-1] // 2
        rot = torch.cat((-xf[..., h:], xf[..., :h]), dim=-1)
        per_op = bf(torch, bf(torch, xf * c) + bf(torch, rot * s))
        fused = bf(torch, xf * c + rot * s)
        log(f"rope call {i} {tuple(x.shape)}: per-op bf16 mismatches {mismatches(torch, per_op, y)}, "
            f"fused fp32 {mismatches(torch, fused, y)}")
    if calls:
        # cos/sin of the first two calls against fp32/fp64 recomputation from positions.
        for i in range(min(len(calls), 4)):
            cos = calls[i][1].float()[0]
            n, d = cos.shape
            log(f"rope call {i}: cos[1,:4] = {cos[1, :4].tolist()}")


def flash_like(torch, q, k, v, mask, round_p, round_scores=False, normalize_first=False):
    qf, kf, vf = q.float(), k.float(), v.float()
    if kf.shape[1] != qf.shape[1]:
        rep = qf.shape[1] // kf.shape[1]
        kf = kf.repeat_interleave(rep, dim=1)
        vf = vf.repeat_interleave(rep, dim=1)
    s = qf @ kf.transpose(-1, -2)
    if round_scores:
        s = bf(torch, s)
    if mask is not None:
        s = s + mask.float()
    m = s.max(dim=-1, keepdim=True).values
    e = torch.exp(s - m)
    den = e.sum(-1, keepdim=True)
    if normalize_first:
        p = e / den
        p = bf(torch, p) if round_p else p
        return bf(torch, p @ vf)
    pe = bf(torch, e) if round_p else e
    return bf(torch, (pe @ vf) / den)


def check_sdpa(torch, calls, put, orig_sdpa):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    for i, (q, k, v, mask, kw, y) in enumerate(calls):
        for nm, t in (("q", q), ("k", k), ("v", v), ("y", y)):
            put(f"sdpa{i}:{nm}", t)
        if i == 0:
            put("sdpa0:mask", mask)
        log(f"sdpa call {i}: q {tuple(q.shape)} k {tuple(k.shape)} mask {None if mask is None else mask.dtype} kw {kw}")
        for label, args in (("flash P rounded", dict(round_p=True)),
                            ("exact fp32", dict(round_p=False)),
                            ("bf16 scores, P rounded after norm", dict(round_p=True, round_scores=True,
                                                                      normalize_first=True)),
                            ("P rounded after norm", dict(round_p=True, normalize_first=True))):
            log(f"   {label}: {mismatches(torch, flash_like(torch, q, k, v, mask, **args), y)}")
        for be in (SDPBackend.MATH, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
            try:
                with sdpa_kernel([be]):
                    z = orig_sdpa(q, k, v, attn_mask=mask, **kw)
                log(f"   torch backend {be}: {mismatches(torch, z, y)}")
            except Exception as ex:  # noqa: BLE001
                log(f"   torch backend {be}: unavailable ({str(ex)[:80]})")
        # Single query rows: is the output a per-row function (no cross-row effects)?
        if i == 0:
            z = torch.stack([orig_sdpa(q[:, :, r:r + 1], k, v, attn_mask=mask[:, :, r:r + 1], **kw)[:, :, 0]
                             for r in range(q.shape[2])], dim=2)
            log(f"   row-by-row sdpa vs batched: {mismatches(torch, z, y)}")


def check_leaf_ops(torch, model, rec):
    # Linear layers: fp64 product rounded once to bf16.
    bad = {}
    for name, mod in model.named_modules():
        if name + ":in" not in rec or name + ":out" not in rec:
            continue
        x = torch.from_numpy(rec[name + ":in"]).double()
        y = torch.from_numpy(rec[name + ":out"])
        if isinstance(mod, torch.nn.Linear):
            z = x @ mod.weight.double().T
            if mod.bias is not None:
                z = z + mod.bias.double()
            bad[name] = mismatches(torch, bf(torch, z.float()), y)
        elif type(mod).__name__ == "Gemma4UnifiedRMSNorm":
            ms = (x * x).mean(-1, keepdim=True) + mod.eps
            z = x * ms ** -0.5
            if mod.with_scale:
                z = z * mod.weight.double()
            bad[name] = mismatches(torch, bf(torch, z.float()), y)
        elif name.endswith("act_fn"):
            z = 0.5 * x * (1.0 + torch.tanh((2.0 / np.pi) ** 0.5 * (x + 0.044715 * x ** 3)))
            bad[name] = mismatches(torch, bf(torch, z.float()), y)
        elif isinstance(mod, torch.nn.LayerNorm):
            z = torch.nn.functional.layer_norm(x, x.shape[-1:], mod.weight.double(), mod.bias.double(), mod.eps)
            bad[name] = mismatches(torch, bf(torch, z.float()), y)
    for name, r in bad.items():
        if r[0]:
            log(f"leaf {name}: fp64-then-round mismatches {r}")
    log("leaf ops checked:", len(bad), "with mismatches:", sum(1 for r in bad.values() if r[0]))


if __name__ == "__main__":
    main()
