// engine_bench: speed of avserve's engine itself (checkpoint loader, model code, backend) on any
// checkpoint and backend: prefill seconds at given prompt lengths, greedy decode ms/token at given
// contexts, and `batch` questions forked from one prefix decoding together (ms per lockstep step).
//   engine_bench [--checkpoint DIR] [--backend cpu|cuda] [--threads N] [--chunk N]
//                [--prefill 128,512,2048] [--decode_ctx 128,2048] [--decode_tokens 64] [--batch 0]
//                [--reps 3] [--warmup 0] [--load_warmup 0]
// --warmup N: one untimed N-token prefill first (loads every kernel, caches the GEMM heuristics of the chunk
// shapes, fills the allocator), as bench/engine_gpu/peer_transformers.py warms transformers up before timing.
// --load_warmup N: the engine's own warm-up at load (EngineOptions::warmup_tokens), timed within the load; with
// --reps 1 and no --warmup, the first prefill is then what a server's first request meets.
// bench/engine_cpu.sh runs it on the tiny test checkpoints (CPU); bench/engine_gpu.sh (device_run.sh) on
// the random 12B checkpoint (CUDA). The last line is machine-readable:
//   engine_bench backend=<name> prefill_<n>_s=<s>... decode_<ctx>_ms=<ms>... batch<b>_<ctx>_step_ms=<ms>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "engine/api.h"

namespace {

using avserve::engine::BackendKind;
using avserve::engine::Engine;
using avserve::engine::EngineOptions;
using avserve::engine::PromptChunk;
using avserve::engine::SamplingOptions;
using avserve::engine::Sequence;
using avserve::engine::TokenType;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

struct Args {
  std::string checkpoint = std::string(AVSERVE_SOURCE_DIR) + "/tests/data/engine/tiny";
  std::string backend = "cpu";
  int threads = 0, chunk = 512, decode_tokens = 64, batch = 0, reps = 3, warmup = 0, load_warmup = 0;
  std::vector<int> prefill = {128, 512, 2048}, decode_ctx = {128, 2048};
};

std::vector<int> IntList(const std::string& s) {
  std::vector<int> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(std::atoi(item.c_str()));
  }
  return out;
}

bool ParseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--checkpoint") a->checkpoint = v;
    else if (k == "--backend") a->backend = v;
    else if (k == "--threads") a->threads = std::atoi(v.c_str());
    else if (k == "--chunk") a->chunk = std::atoi(v.c_str());
    else if (k == "--prefill") a->prefill = IntList(v);
    else if (k == "--decode_ctx") a->decode_ctx = IntList(v);
    else if (k == "--decode_tokens") a->decode_tokens = std::atoi(v.c_str());
    else if (k == "--batch") a->batch = std::atoi(v.c_str());
    else if (k == "--reps") a->reps = std::atoi(v.c_str());
    else if (k == "--warmup") a->warmup = std::atoi(v.c_str());
    else if (k == "--load_warmup") a->load_warmup = std::atoi(v.c_str());
    else return false;
  }
  return argc % 2 == 1 && (a->backend == "cpu" || a->backend == "cuda") && a->chunk > 0 && a->reps > 0 &&
         a->decode_tokens > 0;
}

PromptChunk TextPrompt(int n, int vocab) {
  PromptChunk c;
  for (int i = 0; i < n; ++i) c.ids.push_back(5 + (i * 7919) % (vocab - 10));
  c.types.assign(n, TokenType::kText);
  return c;
}

// Best of `reps` prefill times of an n-token text prompt, in one Prefill call (the engine steps it).
double PrefillSeconds(Engine& engine, int n, int reps) {
  double best = -1;
  const PromptChunk prompt = TextPrompt(n, engine.info().vocab_size);
  for (int r = 0; r < reps; ++r) {
    auto seq = engine.NewSequence(n + 1);
    if (!seq.ok()) {
      std::fprintf(stderr, "prefill %d: %s\n", n, std::string(seq.status().message()).c_str());
      return -1;
    }
    const auto t0 = Clock::now();
    if (!(*seq)->Prefill(prompt, nullptr).ok()) return -1;
    const double s = Seconds(t0, Clock::now());
    best = best < 0 ? s : std::min(best, s);
  }
  return best;
}

// A `context`-token prefix, then `batch` forks (batch 0: the prefix itself) that each get one more
// token and decode `tokens` greedy tokens together. Returns seconds per lockstep forward step
// (every sequence one token); stop ids are ignored (on_token counts).
// token_hash: FNV-style hash of every emitted (sequence, token), to compare the tokens of two runs.
double DecodeStepSeconds(Engine& engine, int context, int tokens, int batch, uint32_t* token_hash) {
  auto prefix = engine.NewSequence(context + tokens + 2);
  if (!prefix.ok() || !(*prefix)->Prefill(TextPrompt(context, engine.info().vocab_size), nullptr).ok()) return -1;
  std::vector<std::unique_ptr<Sequence>> forks;
  std::vector<Sequence*> seqs;
  for (int i = 0; i < batch; ++i) {
    auto fork = (*prefix)->Fork();
    if (!fork.ok()) return -1;
    PromptChunk question = TextPrompt(1, engine.info().vocab_size);
    question.ids[0] += i;
    if (!(*fork)->Prefill(question, nullptr).ok()) return -1;
    seqs.push_back(fork->get());
    forks.push_back(*std::move(fork));
  }
  if (batch == 0) seqs.push_back(prefix->get());
  SamplingOptions s;
  s.max_new_tokens = tokens;
  std::vector<int> emitted(seqs.size(), 0);
  const auto t0 = Clock::now();
  const auto st = engine.GenerateBatch(seqs, s, [&](size_t i, int32_t t) {
    *token_hash = (*token_hash ^ static_cast<uint32_t>(t + 7919 * static_cast<int>(i))) * 16777619u;
    return ++emitted[i] < tokens;
  }, nullptr);
  const double elapsed = Seconds(t0, Clock::now());
  // The first token comes from the prefill's logits; each later one costs a forward step.
  const int steps = *std::max_element(emitted.begin(), emitted.end()) - 1;
  return st.ok() && steps > 0 ? elapsed / steps : -1;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (!ParseArgs(argc, argv, &a)) {
    std::fprintf(stderr, "usage: see the top of bench/engine_bench.cc\n");
    return 2;
  }
  EngineOptions o;
  o.checkpoint_dir = a.checkpoint;
  o.backend = a.backend == "cpu" ? BackendKind::kCpu : BackendKind::kCuda;
  o.num_threads = a.threads;
  o.prefill_chunk_tokens = a.chunk;
  o.warmup_tokens = a.load_warmup;
  const auto t_load = Clock::now();
  auto engine = Engine::Load(o);
  if (!engine.ok()) {
    std::fprintf(stderr, "load failed: %s\n", std::string(engine.status().message()).c_str());
    return 1;
  }
  std::printf("checkpoint %s backend %s threads %d chunk %d: loaded in %.1f s (warm-up of %d positions %.3f s)\n",
              o.checkpoint_dir.c_str(), (*engine)->backend_name().c_str(), a.threads, a.chunk,
              Seconds(t_load, Clock::now()), a.load_warmup, (*engine)->warmup_seconds());
  if (a.warmup > 0 && PrefillSeconds(**engine, a.warmup, 1) < 0) {
    std::fprintf(stderr, "warm-up prefill of %d tokens failed\n", a.warmup);
    return 1;
  }
  std::string summary = "engine_bench backend=" + (*engine)->backend_name();
  char buf[128];
  for (int n : a.prefill) {
    const double s = PrefillSeconds(**engine, n, a.reps);
    std::printf("prefill %7d tokens: %9.4f s  %10.0f tok/s\n", n, s, n / s);
    std::snprintf(buf, sizeof(buf), " prefill_%d_s=%.4f", n, s);
    summary += buf;
  }
  for (int ctx : a.decode_ctx) {
    uint32_t hash = 2166136261u;
    const double s = DecodeStepSeconds(**engine, ctx, a.decode_tokens, 0, &hash);
    std::printf("decode at context %7d: %8.3f ms/token  %8.1f tok/s\n", ctx, 1e3 * s, 1.0 / s);
    std::snprintf(buf, sizeof(buf), " decode_%d_ms=%.3f", ctx, 1e3 * s);
    summary += buf;
    if (a.batch > 0) {
      uint32_t batch_hash = 2166136261u;
      const double b = DecodeStepSeconds(**engine, ctx, a.decode_tokens, a.batch, &batch_hash);
      std::printf("%d questions on one %d-token prefix: %8.3f ms per step (every question one token)\n", a.batch,
                  ctx, 1e3 * b);
      std::snprintf(buf, sizeof(buf), " batch%d_%d_step_ms=%.3f tokens_%d=%08x/%08x", a.batch, ctx, 1e3 * b, ctx,
                    hash, batch_hash);
      summary += buf;
    }
  }
  std::printf("%s\n", summary.c_str());
  return 0;
}
