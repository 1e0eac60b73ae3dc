// The whole engine on the CUDA backend with the tiny bf16 checkpoint: prefill logits and greedy generation
// match transformers' goldens exactly as the CPU backend does (tests/engine/gemma4_parity_test.cc).
#include <cuda_runtime.h>

#include <cmath>
#include <memory>
#include <vector>

#include "engine/api.h"
#include "gtest/gtest.h"
#include "tests/engine/cuda/test_util.h"
#include "tests/engine/golden.h"

namespace avserve::engine {
namespace {

using cuda::testing::HaveDevice;

std::unique_ptr<Engine> Load(BackendKind kind) {
  EngineOptions o;
  o.checkpoint_dir = testing::TinyBf16();
  o.backend = kind;
  o.num_threads = 2;
  auto engine = Engine::Load(o);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

// Prefill logits of `prompt` and 32 greedy tokens after it.
void RunPrompt(Engine& engine, const testing::Golden& golden, const std::string& prompt, std::vector<float>* logits,
         std::vector<int32_t>* tokens) {
  auto seq = engine.NewSequence(256);
  ASSERT_TRUE(seq.ok()) << seq.status();
  (*seq)->set_keep_all_logits(true);
  ASSERT_TRUE((*seq)->Prefill(golden.Chunk(prompt, 0, golden.length(prompt)), nullptr).ok());
  *logits = (*seq)->logits();
  (*seq)->set_keep_all_logits(false);
  SamplingOptions s;
  s.max_new_tokens = 32;
  ASSERT_TRUE(engine.Generate(**seq, s, [&](int32_t t) { tokens->push_back(t); return true; }, nullptr).ok());
}

TEST(CudaEngineTest, TinyCheckpointMatchesCpuAndTransformers) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const testing::Golden golden = testing::Golden::Load();
  auto cuda = Load(BackendKind::kCuda);
  auto cpu = Load(BackendKind::kCpu);
  ASSERT_NE(cuda, nullptr);
  ASSERT_NE(cpu, nullptr);
  EXPECT_NE(cuda->backend_name().find("cuda"), std::string::npos);
  std::vector<float> gpu_logits, cpu_logits;
  std::vector<int32_t> gpu_tokens, cpu_tokens;
  RunPrompt(*cuda, golden, "p1", &gpu_logits, &gpu_tokens);
  RunPrompt(*cpu, golden, "p1", &cpu_logits, &cpu_tokens);
  // Logits: the same contract as the CPU backend's parity test: per position within 1e-2 (inf-norm) of
  // transformers' bf16 logits, and no further (L2) from them than transformers' own bf16 run is from fp32.
  const int v = golden.vocab();
  const std::vector<float> hf_bf16 = golden.logits("bf16_p1_A"), hf_f32 = golden.logits("f32_p1_A");
  ASSERT_EQ(gpu_logits.size(), hf_bf16.size());
  EXPECT_LE(testing::MaxRowRelError(gpu_logits, hf_bf16, v), 1e-2);
  const double floor = testing::MaxRowRelError(hf_bf16, hf_f32, v, 0, testing::Norm::kL2);
  EXPECT_LE(testing::MaxRowRelError(gpu_logits, hf_bf16, v, 0, testing::Norm::kL2), floor);
  RecordProperty("cuda_vs_cpu_l2", std::to_string(testing::MaxRowRelError(gpu_logits, cpu_logits, v, 0,
                                                                           testing::Norm::kL2)));
  // Greedy: identical to transformers' bf16 run up to a bf16 tie (same rule as the CPU parity test).
  const std::vector<int32_t> want = golden.greedy("bf16_p1");
  const std::vector<float> steps = golden.greedy_logits("bf16_p1");
  ASSERT_EQ(gpu_tokens.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    if (gpu_tokens[i] == want[i]) continue;
    const float top = steps[i * v + want[i]], mine = steps[i * v + gpu_tokens[i]];
    EXPECT_LE(top - mine, std::abs(top) / 128.0f) << "step " << i << " diverged without a bf16 tie";
    break;
  }
  if (cpu_tokens == want) {
    EXPECT_EQ(gpu_tokens, cpu_tokens);
  }
}

}  // namespace
}  // namespace avserve::engine
