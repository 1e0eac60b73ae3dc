// CPU engine speed on a checkpoint (default: the tiny test checkpoints): prefill tokens/s at a few
// prompt lengths and greedy decode ms/token. Usage:
//   engine_cpu_bench [checkpoint_dir] [threads]      (bench/engine_cpu.sh runs both tiny checkpoints)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/api.h"

namespace {

using avserve::engine::Engine;
using avserve::engine::EngineOptions;
using avserve::engine::PromptChunk;
using avserve::engine::SamplingOptions;
using avserve::engine::TokenType;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

PromptChunk TextPrompt(int n, int vocab) {
  PromptChunk c;
  for (int i = 0; i < n; ++i) c.ids.push_back(5 + (i * 7919) % (vocab - 10));
  c.types.assign(n, TokenType::kText);
  return c;
}

// Best of `reps` prefill times of an n-token text prompt.
double PrefillSeconds(Engine& engine, int n, int reps) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto seq = engine.NewSequence(n + 1);
    if (!seq.ok()) return -1;
    const PromptChunk prompt = TextPrompt(n, engine.info().vocab_size);
    const auto t0 = Clock::now();
    if (!(*seq)->Prefill(prompt, nullptr).ok()) return -1;
    best = std::min(best, Seconds(t0, Clock::now()));
  }
  return best;
}

// Seconds per decoded token after an n-token prompt (greedy, stop ids ignored by counting).
double DecodeSecondsPerToken(Engine& engine, int context, int tokens) {
  auto seq = engine.NewSequence(context + tokens + 1);
  if (!seq.ok() || !(*seq)->Prefill(TextPrompt(context, engine.info().vocab_size), nullptr).ok()) return -1;
  SamplingOptions s;
  s.max_new_tokens = tokens;
  int emitted = 0;
  const auto t0 = Clock::now();
  if (!engine.Generate(**seq, s, [&](int32_t) { return ++emitted < tokens; }, nullptr).ok()) return -1;
  return emitted > 0 ? Seconds(t0, Clock::now()) / emitted : -1;
}

}  // namespace

int main(int argc, char** argv) {
  EngineOptions o;
  o.checkpoint_dir = argc > 1 ? argv[1] : std::string(AVSERVE_SOURCE_DIR) + "/tests/data/engine/tiny";
  o.num_threads = argc > 2 ? std::atoi(argv[2]) : 0;
  o.prefill_chunk_tokens = 512;
  auto engine = Engine::Load(o);
  if (!engine.ok()) {
    std::fprintf(stderr, "load failed: %s\n", std::string(engine.status().message()).c_str());
    return 1;
  }
  std::printf("checkpoint %s threads %d backend %s\n", o.checkpoint_dir.c_str(), o.num_threads,
              (*engine)->backend_name().c_str());
  for (int n : {128, 512, 2048}) {
    const double s = PrefillSeconds(**engine, n, 3);
    std::printf("prefill %5d tokens: %8.4f s  %9.0f tok/s\n", n, s, n / s);
  }
  for (int ctx : {128, 2048}) {
    const double s = DecodeSecondsPerToken(**engine, ctx, 64);
    std::printf("decode at context %5d: %7.3f ms/token  %8.1f tok/s\n", ctx, 1e3 * s, 1.0 / s);
  }
  return 0;
}
