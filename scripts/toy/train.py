#!/usr/bin/env python3
"""Trains the toy gemma4_unified checkpoint on the GPU machine (torch + transformers 5.17).

  python3 scripts/toy/train.py --out DIR [--minutes 4] [--clips 24]

Reads deploy/toy-model/{config,tokenizer}.json (scripts/toy/make_model_files.py) and the word bank
(scripts/toy/make_word_bank.py). Clips are generated on the fly: scene, audio and token ids on CPU
workers (scripts/toy/toydata.py), frames rendered on the GPU from the scene parameters with
toyworld.render_frames (the same code the sample generator uses), then codec-like augmentation.
Loss: cross-entropy on the answer token and the <turn|> after it only.
Writes into --out: model.safetensors (bf16, the on-disk tensor names of google/gemma-4-12B-it),
eval.json (held-out accuracy per category under aligned / audio+3 s / shuffled-frames conditions,
in bf16), parity.npz (one prompt with its inputs and the transformers logits, for engine tests)
and train_log.txt.
"""
import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "samples", "toy"))
import toydata as td  # noqa: E402
import toyworld as tw  # noqa: E402

MODEL_DIR = os.path.join(ROOT, "deploy", "toy-model")
BANK = os.path.join(HERE, "data", "word_bank.npz")
LOG = None


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    if LOG:
        LOG.write(s + "\n")
        LOG.flush()


# ----------------------------------------------------------------------------------------------
# CPU workers: examples (scene, audio, ids).
_W = {}


def _worker_init():
    from tokenizers import Tokenizer

    class Tok:
        def __init__(self, t):
            self.t = t

        def encode(self, s):
            return self.t.encode(s, add_special_tokens=False).ids

    _W["vocab"] = td.Vocab(Tok(Tokenizer.from_file(os.path.join(MODEL_DIR, "tokenizer.json"))))
    _W["bank"] = tw.WordBank.load(BANK)


def _make_batch(spec):
    seed, clips, seconds, train, condition = spec
    ex = [td.make_example(seed * 1000 + i, seconds, _W["vocab"], _W["bank"], train, condition,
                          branches=18 if train else 6, per_template=3 if train else 1, bind=_W.get("bind", False))
          for i in range(clips)]
    b = td.collate(ex, _W["vocab"].pad)
    b["answer_at"] = [e["answer_at"] for e in ex]
    b["answers"] = [e["answers"] for e in ex]
    b["categories"] = [e["categories"] for e in ex]
    b["templates"] = [e["templates"] for e in ex]
    return b


# ----------------------------------------------------------------------------------------------
# GPU side.
def gpu_frames(render: dict, dev, train: bool, gen):
    """[B, L, 64, 6912] patches from the scene arrays; training adds codec-like damage."""
    a = {k: torch.as_tensor(v, device=dev) for k, v in render.items()}
    yy, xx = tw.pixel_grid(torch, device=dev)
    img = tw.render_frames(a, yy, xx, torch.floor).float()          # [B, L, H, W, 3]
    if train:
        B = img.shape[0]
        if True:  # 4:2:0 chroma on half the clips
            sel = torch.rand(B, device=dev, generator=gen) < 0.5
            ycc = rgb_to_ycc(img[sel])
            c = ycc[..., 1:]
            shp = c.shape
            c = c.reshape(*shp[:-3], shp[-3] // 2, 2, shp[-2] // 2, 2, 2).mean(dim=(-4, -2))
            c = c.repeat_interleave(2, dim=-3).repeat_interleave(2, dim=-2)
            img[sel] = ycc_to_rgb(torch.cat([ycc[..., :1], c], dim=-1))
        sigma = torch.rand(B, 1, 1, 1, 1, device=dev, generator=gen) * 0.02
        img = img + sigma * torch.randn(img.shape, device=dev, generator=gen)
        img = torch.floor(img.clamp(0, 1) * 255 + 0.5) / 255
    return tw.patchify(img)


def rgb_to_ycc(x):
    r, g, b = x.unbind(-1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.stack([y, (b - y) * 0.564, (r - y) * 0.713], -1)


def ycc_to_rgb(x):
    y, cb, cr = x.unbind(-1)
    r = y + 1.403 * cr
    b = y + 1.773 * cb
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return torch.stack([r, g, b], -1)


def to_inputs(b, dev, window, train, gen):
    t = {k: torch.as_tensor(b[k], device=dev) for k in ("ids", "pos", "branch", "labels", "aux", "aux2", "types", "block")}
    full, sliding = td.mask_arrays(t["pos"], t["branch"], t["block"], window)
    B, L = b["render"]["kind"].shape
    patches = gpu_frames(b["render"], dev, train, gen)
    vpos = torch.as_tensor(tw.patch_positions(), device=dev).expand(B, L, tw.NUM_PATCHES, 2)
    audio = torch.as_tensor(b["audio"], device=dev)
    return t, dict(input_ids=t["ids"], pixel_values_videos=patches, video_position_ids=vpos,
                   input_features=audio, input_features_mask=torch.ones(audio.shape[:2], dtype=torch.bool, device=dev),
                   position_ids=t["pos"], mm_token_type_ids=t["types"],
                   attention_mask={"full_attention": full, "sliding_attention": sliding}, use_cache=False)


@torch.no_grad()
def perception_accuracy(logits, t):
    """Accuracy of the auxiliary per-second targets: shape at <image|>, colour at <|audio>, sound
    at <audio|>."""
    v = _W["vocab"]
    out = {}
    for name, tok in (("shape", v.eoi), ("colour", v.boa), ("sound", v.eoa)):
        m = (t["ids"] == tok) & (t["aux"] != td.IGNORE)
        if bool(m.any()):
            out[name] = round(in_top2(logits[m], t["aux"][m]), 3)
    m = t["aux2"] != td.IGNORE
    if bool(m.any()):   # the binding target (shape where the sound is), top-2 with the sound
        out["shape@sound"] = round(in_top2(logits[m], t["aux2"][m]), 3)
    return out


def in_top2(logits, target):
    return (logits.topk(2, -1).indices == target[:, None]).any(-1).float().mean().item()


def load_config():
    from transformers import AutoConfig
    cfg = AutoConfig.from_pretrained(MODEL_DIR)
    try:
        cfg._attn_implementation = "sdpa"
    except Exception:  # noqa: BLE001
        pass
    return cfg


def model_class():
    try:
        from transformers import Gemma4UnifiedForConditionalGeneration as cls
    except ImportError:
        from transformers.models.gemma4_unified.modeling_gemma4_unified import \
            Gemma4UnifiedForConditionalGeneration as cls
    return cls


def prefetch(pool, fn, specs, depth):
    """pool.imap with back-pressure: at most `depth` batches in flight."""
    from collections import deque
    q = deque()
    it = iter(specs)
    for s in it:
        q.append(pool.apply_async(fn, (s,)))
        if len(q) >= depth:
            break
    while q:
        r = q.popleft().get()
        for s in it:
            q.append(pool.apply_async(fn, (s,)))
            break
        yield r


def build_model(cfg, dev, init=None):
    if init:
        model = model_class().from_pretrained(init, dtype=torch.float32, attn_implementation="sdpa").to(dev)
        log("initialized from", init)
    else:
        model = model_class()(cfg).to(dev)
    emb = model.get_input_embeddings().weight
    log("tied lm_head:", model.lm_head.weight.data_ptr() == emb.data_ptr(),
        "params:", sum(p.numel() for p in model.parameters()))
    return model


# ----------------------------------------------------------------------------------------------
def disk_name(n: str):
    """Internal transformers parameter name -> on-disk name of the published checkpoint (spec 7.1)."""
    if n.startswith("lm_head."):
        return None
    if n.startswith("model.embed_vision.multimodal_embedder."):
        return "model.embed_vision." + n[len("model.embed_vision.multimodal_embedder."):]
    if n.startswith("model.embed_vision."):
        return "model.vision_embedder." + n[len("model.embed_vision."):]
    return n


def expected_disk_names(cfg):
    tc = cfg.text_config
    names = {"model.language_model.embed_tokens.weight", "model.language_model.norm.weight",
             "model.embed_vision.embedding_projection.weight", "model.embed_audio.embedding_projection.weight",
             "model.vision_embedder.pos_embedding"}
    for p in ("patch_ln1", "patch_dense", "patch_ln2", "pos_norm"):
        names |= {f"model.vision_embedder.{p}.weight", f"model.vision_embedder.{p}.bias"}
    for i, lt in enumerate(tc.layer_types):
        pre = f"model.language_model.layers.{i}."
        names |= {pre + x for x in ("input_layernorm.weight", "post_attention_layernorm.weight",
                                    "pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight",
                                    "layer_scalar", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                                    "mlp.down_proj.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                    "self_attn.o_proj.weight", "self_attn.q_norm.weight", "self_attn.k_norm.weight")}
        if lt == "sliding_attention":
            names.add(pre + "self_attn.v_proj.weight")
    return names


def save_checkpoint(model, cfg, out_dir):
    from safetensors.torch import save_file
    sd = {}
    for n, t in model.state_dict().items():
        d = disk_name(n)
        if d is not None:
            sd[d] = t.detach().to(torch.bfloat16).contiguous().cpu()
    want = expected_disk_names(cfg)
    log("disk names: missing", sorted(want - set(sd)), "extra", sorted(set(sd) - want))
    path = os.path.join(out_dir, "model.safetensors")
    save_file(sd, path, metadata={"format": "pt"})
    log("saved", path, os.path.getsize(path), "bytes,", len(sd), "tensors")
    return path


# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, pool, dev, window, conditions, batches, clips, tag):
    model.eval()
    res = {}
    gen = torch.Generator(device=dev).manual_seed(1)
    for cond in conditions:
        specs = [(900000 + 37 * i + s, clips, s, False, cond)
                 for i, s in enumerate(([8, 9, 10, 11, 12] * batches)[:batches])]
        tally = {}
        for b in prefetch(pool, _make_batch, specs, 2 * len(pool._pool)):
            _, kw = to_inputs(b, dev, window, False, gen)
            logits = model(**kw).logits.float()
            for i in range(len(b["answer_at"])):
                for a, ans, cat, tpl in zip(b["answer_at"][i], b["answers"][i], b["categories"][i], b["templates"][i]):
                    ok_ans = int(logits[i, a].argmax()) == ans
                    for key in (cat, tpl, "all"):
                        c = tally.setdefault(key, [0, 0])
                        c[0] += ok_ans
                        c[1] += 1
                    c = tally.setdefault("stop_after_answer", [0, 0])
                    c[0] += int(logits[i, a + 1].argmax()) == int(b["labels"][i][a + 1])
                    c[1] += 1
        res[cond] = {k: round(v[0] / v[1], 4) for k, v in sorted(tally.items())}
        res[cond]["n"] = tally["all"][1]
        log(f"eval[{tag}] {cond}:", json.dumps(res[cond]))
    model.train()
    return res


def train(args):
    global LOG
    os.makedirs(args.out, exist_ok=True)
    LOG = open(os.path.join(args.out, "train_log.txt"), "a")
    torch.manual_seed(0)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    import transformers
    log("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name())
    cfg = load_config()
    window = cfg.text_config.sliding_window
    log("config ok:", type(cfg).__name__, "window", window, "layer_types", cfg.text_config.layer_types)
    _W["bind"] = args.bind      # read by the forked workers
    ctx = mp.get_context("fork")
    pool = ctx.Pool(args.workers, initializer=_worker_init)   # before CUDA is touched
    _worker_init()
    model = build_model(cfg, dev, args.init)
    check_tokenizer()

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    gen = torch.Generator(device=dev).manual_seed(0)
    rng = np.random.default_rng(0)
    focus_t, _, focus_w = args.focus.partition(":")
    if focus_t and (not focus_w or not any(focus_t == tid for _, tid, _ in tw.TEMPLATES)):
        sys.exit(f"--focus {args.focus}: want TEMPLATE:W with TEMPLATE one of samples/toy/toyworld.py's TEMPLATES")
    focus_w = float(focus_w) if focus_t else 1.0
    t0 = time.time()
    budget = args.minutes * 60

    def curriculum():
        """Short clips first (retrieval is easy there), then the real lengths 8-12 s."""
        for s in range(10 ** 9):
            frac = (time.time() - t0) / budget
            lo, hi = (1, 4) if frac < args.short_frac else (2, 8) if frac < 2 * args.short_frac else (3, 12)
            if frac >= 2 * args.short_frac and rng.random() < 0.7:
                lo = 8
            L = int(rng.integers(lo, hi + 1))
            clips = min(args.max_clips, max(args.clips, int(args.clips * 1400 / (96 * L + 450))))
            yield (s, clips, L, True, "aligned")

    specs = curriculum()
    step = 0
    ema = None
    t_mark = None
    for b in prefetch(pool, _make_batch, specs, 2 * args.workers):
        t, kw = to_inputs(b, dev, window, True, gen)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(**kw).logits
        labels = t["labels"]
        sel = labels != td.IGNORE
        aux_sel = t["aux"] != td.IGNORE
        if focus_w == 1.0:
            loss = F.cross_entropy(logits[sel].float(), labels[sel])
        else:  # the focus template's answer and <turn|> weigh focus_w times the others
            w = np.ones(tuple(labels.shape), np.float32)  # built on the host, one copy (not a launch per answer)
            for i, (ats, tps) in enumerate(zip(b["answer_at"], b["templates"])):
                for a, tp in zip(ats, tps):
                    if tp == focus_t:
                        w[i, int(a):int(a) + 2] = focus_w
            w = torch.from_numpy(w).to(dev)
            ce = F.cross_entropy(logits[sel].float(), labels[sel], reduction="none")
            loss = (ce * w[sel]).sum() / w[sel].sum()
        if args.aux_weight > 0 and bool(aux_sel.any()):
            loss = loss + args.aux_weight * F.cross_entropy(logits[aux_sel].float(), t["aux"][aux_sel])
        aux2_sel = t["aux2"] != td.IGNORE
        if args.aux_weight > 0 and bool(aux2_sel.any()):
            loss = loss + args.aux_weight * F.cross_entropy(logits[aux2_sel].float(), t["aux2"][aux2_sel])
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            log(f"step {step}: non-finite loss, skipped")
            step += 1
            continue
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        # warmup 150 steps, then cosine to 5% over the time budget
        if step == 10:
            t_mark = time.time()
        if step == 40:
            log(f"step time {(time.time() - t_mark) / 30:.3f} s (short clips)")
        # The schedule follows the clock (short curriculum clips make early steps cheaper than late ones).
        frac = (time.time() - t0) / budget
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        with torch.no_grad():
            ans = sel & (labels != _W["vocab"].turn_end)
            acc = (logits[ans].argmax(-1) == labels[ans]).float().mean().item()
        ema = acc if ema is None else 0.95 * ema + 0.05 * acc
        if step % 50 == 0 or step < 3:
            log(f"step {step} t {time.time() - t0:.0f}s loss {loss.item():.4f} acc(ema) {ema:.3f} lr {lr:.2e} "
                f"T {t['ids'].shape[1]} L {b['render']['kind'].shape[1]} B {t['ids'].shape[0]} "
                f"perception {perception_accuracy(logits, t)}")
        step += 1
        if args.smoke and step >= 3:
            break
        if time.time() - t0 > budget:
            break
    log(f"trained {step} steps in {time.time() - t0:.0f} s")
    ckpt_dir = tempfile.mkdtemp()
    try:
        for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(MODEL_DIR, f), ckpt_dir)
        save_checkpoint(model, cfg, ckpt_dir)
        shutil.copy(os.path.join(ckpt_dir, "model.safetensors"), args.out)
    except Exception:  # noqa: BLE001
        log("SAVE FAILED", traceback.format_exc())
        torch.save({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()},
                   os.path.join(args.out, "state_dict_bf16.pt"))
    results = {"steps": step, "train_seconds": round(time.time() - t0, 1)}
    nb = 1 if args.smoke else args.eval_batches
    if not args.skip_fp32_eval:
        results["fp32"] = evaluate(model, pool, dev, window, ["aligned"], nb, args.clips, "fp32")
    bf = reload_bf16(ckpt_dir, model, dev)
    if bf is not None:
        results["bf16_reloaded"] = evaluate(bf, pool, dev, window, ["aligned", "shift3", "shuffle"], nb, args.clips,
                                            "bf16 reloaded")
        try:
            write_parity(bf, dev, window, args.out)
            check_tree_equivalence(bf, dev, window)
        except Exception:  # noqa: BLE001
            log("PARITY FAILED", traceback.format_exc())
    with open(os.path.join(args.out, "eval.json"), "w") as f:
        json.dump(results, f, indent=1)
    pool.terminate()


def check_tokenizer():
    """The `tokenizers` library and toyworld's reference encoder must agree."""
    ref = tw.ToyTokenizer(tw.load_json(os.path.join(MODEL_DIR, "tokenizer.json")))
    hf = _W["vocab"].tok
    texts = [tw.prompt_text(3, q["question"]) + tw.answer_text(q["answer"])
             for q in tw.questions(tw.sample_scene(np.random.default_rng(3)))]
    texts += ["Describe the video, please! été 12:34 \t x", " 00:08 ", "\n\n\nWhat"]
    bad = [t for t in texts if hf.encode(t) != ref.encode(t)]
    log("tokenizer check:", len(texts) - len(bad), "agree,", len(bad), "differ")
    for t in bad[:3]:
        log("  differ:", repr(t[-80:]), hf.encode(t)[-20:], ref.encode(t)[-20:])


def reload_bf16(ckpt_dir, model, dev):
    """Loads the written checkpoint with from_pretrained (proves the on-disk names) in bf16."""
    try:
        m, info = model_class().from_pretrained(
            ckpt_dir, dtype=torch.bfloat16, attn_implementation="sdpa", output_loading_info=True)
        log("reload info:", {k: v for k, v in info.items() if v})
        m = m.to(dev).eval()
        ref = {disk_name(n): p for n, p in model.state_dict().items()}
        worst = 0.0
        for n, p in m.state_dict().items():
            d = disk_name(n)
            if d in ref:
                worst = max(worst, (p.float() - ref[d].float()).abs().max().item())
        log("reload max |w - w_trained|:", worst, "(bf16 rounding)")
        return m
    except Exception:  # noqa: BLE001
        log("RELOAD FAILED", traceback.format_exc())
        return None


@torch.no_grad()
def write_parity(model, dev, window, out):
    """One aligned 8-second prompt (single question, no tree) with transformers' bf16 logits."""
    vocab, bank = _W["vocab"], _W["bank"]
    e = td.make_example(424242, 8, vocab, bank, train=False, branches=1)
    b = td.collate([e], vocab.pad)
    _, kw = to_inputs(b, dev, window, False, None)
    out_logits = model(**kw).logits.float()[0]
    n = len(e["ids"])
    a = int(e["answer_at"][0])
    patches = kw["pixel_values_videos"][0].float().cpu().numpy()
    np.savez_compressed(
        os.path.join(out, "parity.npz"), ids=e["ids"][: a + 1], types=e["types"][: a + 1],
        patches_u8=np.rint(patches * 255).astype(np.uint8), audio=e["audio"],
        logits_last=out_logits[a].cpu().numpy(), logits_all_argmax=out_logits[: a + 1].argmax(-1).cpu().numpy(),
        answer=np.array([e["answers"][0]]), n=np.array([n]))
    log("parity: answer", vocab.tok.t.decode([e["answers"][0]]) if hasattr(vocab.tok, "t") else e["answers"][0],
        "argmax", int(out_logits[a].argmax()), "expected", e["answers"][0])
    try:   # HF's own documented-intent masks must equal ours on a plain prompt.
        from transformers.models.gemma4_unified import modeling_gemma4_unified as mg
        ids = kw["input_ids"][:, : a + 1]
        emb = model.get_input_embeddings()(ids)
        blk = mg.get_block_sequence_ids_for_mask(kw["mm_token_type_ids"][:, : a + 1], ids.device)
        hf = mg.create_masks_for_vision_model(model.config.get_text_config(), emb, None, None,
                                              kw["position_ids"][:, : a + 1], blk)
        for k in ("full_attention", "sliding_attention"):
            mine = kw["attention_mask"][k][..., : a + 1, : a + 1]
            theirs = hf[k]
            if theirs is None:
                log("hf mask", k, "is None (pure causal)")
                continue
            if theirs.dtype != torch.bool:
                theirs = theirs == 0
            log("hf mask", k, "mismatches:", int((mine != theirs[..., : a + 1, : a + 1]).sum()))
    except Exception:  # noqa: BLE001
        log("hf mask compare skipped:", traceback.format_exc().splitlines()[-1])


@torch.no_grad()
def check_tree_equivalence(model, dev, window):
    """A branch of a packed example gives the same logits as its own separate prompt."""
    vocab, bank = _W["vocab"], _W["bank"]
    e = td.make_example(777, 8, vocab, bank, train=False)
    b = td.collate([e], vocab.pad)
    _, kw = to_inputs(b, dev, window, False, None)
    tree = model(**kw).logits.float()[0]
    P = e["prefix_len"]
    j = len(e["answer_at"]) - 1
    start = int(e["answer_at"][j - 1]) + 3 if j > 0 else P
    end = int(e["answer_at"][j]) + 1
    single = dict(e)
    keep = np.r_[np.arange(P), np.arange(start, end)]
    for k in ("ids", "pos", "branch", "labels", "aux", "aux2", "types"):
        single[k] = e[k][keep]
    single["block"] = td.block_ids(single["types"])
    b2 = td.collate([single], vocab.pad)
    _, kw2 = to_inputs(b2, dev, window, False, None)
    sep = model(**kw2).logits.float()[0]
    diff = (tree[end - 1] - sep[len(keep) - 1]).abs().max().item()
    log("tree vs separate prompt: max |logit diff|", diff, "argmax", int(tree[end - 1].argmax()),
        int(sep[len(keep) - 1].argmax()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--clips", type=int, default=24, help="clips per step (long clips; short ones get more, up to --max-clips)")
    ap.add_argument("--max-clips", type=int, default=96)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--eval-batches", type=int, default=10)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--aux-weight", type=float, default=0.5)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--bind", action="store_true",
                    help="binding targets: the shape on screen also at each second's sound position")
    ap.add_argument("--short-frac", type=float, default=0.15, help="time share of the 1-4 s clips")
    ap.add_argument("--init", help="start from this checkpoint folder (from_pretrained)")
    ap.add_argument("--focus", default="", help="TEMPLATE:W: that question template's answer loss weighs W times "
                    "the others' (e.g. word_while_shape:3)")
    ap.add_argument("--skip-fp32-eval", action="store_true")
    train(ap.parse_args())


if __name__ == "__main__":
    main()
