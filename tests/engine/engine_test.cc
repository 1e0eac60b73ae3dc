// Engine/Sequence behaviour on the tiny checkpoint: validation, cancellation, forks, generation
// limits and lazy feeding of generated tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <span>
#include <utility>
#include <vector>

#include "engine/api.h"
#include "engine/model/sampler.h"
#include "tests/engine/golden.h"

namespace avserve::engine {
namespace {

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EngineOptions o;
    o.checkpoint_dir = testing::TinyF32();
    o.num_threads = 2;
    auto e = Engine::Load(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = *std::move(e);
  }
  static PromptChunk Text(std::vector<int32_t> ids) {
    PromptChunk c;
    c.types.assign(ids.size(), TokenType::kText);
    c.ids = std::move(ids);
    return c;
  }
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, ReportsBackendAndInfo) {
  EXPECT_EQ(engine_->backend_name(), "cpu");
  EXPECT_EQ(engine_->info().vocab_size, 512);
}

TEST_F(EngineTest, RejectsBadInput) {
  auto seq = engine_->NewSequence(8);
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ((*seq)->Prefill(Text({2, 600}), nullptr).code(), absl::StatusCode::kInvalidArgument);
  PromptChunk c = Text({2, 506});
  c.types[1] = TokenType::kVideo;  // a vision position without its patch
  EXPECT_EQ((*seq)->Prefill(c, nullptr).code(), absl::StatusCode::kInvalidArgument);
  c.vision_patches.assign(6912, 0.5f);
  c.vision_positions = {40, 0};  // outside the 32-row position table
  EXPECT_EQ((*seq)->Prefill(c, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*seq)->Prefill(Text(std::vector<int32_t>(9, 5)), nullptr).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(engine_->NewSequence(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->NewSequence(1 << 30).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, GenerateBeforePrefillIsAnError) {
  auto seq = engine_->NewSequence(8);
  ASSERT_TRUE(seq.ok());
  SamplingOptions s;
  EXPECT_EQ(engine_->Generate(**seq, s, [](int32_t) { return true; }, nullptr).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(EngineTest, CancellationStopsPrefillAndGeneration) {
  auto seq = engine_->NewSequence(32);
  ASSERT_TRUE(seq.ok());
  std::atomic<bool> cancel{true};
  EXPECT_EQ((*seq)->Prefill(Text({2, 105, 120}), &cancel).code(), absl::StatusCode::kCancelled);
  auto fresh = engine_->NewSequence(32);
  ASSERT_TRUE((*fresh)->Prefill(Text({2, 105, 120}), nullptr).ok());
  EXPECT_EQ(engine_->Generate(**fresh, SamplingOptions{}, [](int32_t) { return true; }, &cancel).code(),
            absl::StatusCode::kCancelled);
}

TEST_F(EngineTest, GenerationHonoursLimitsAndFeedsTokensLazily) {
  auto seq = engine_->NewSequence(64);
  ASSERT_TRUE((*seq)->Prefill(Text({2, 105, 120, 121}), nullptr).ok());
  auto twin = (*seq)->Fork();
  ASSERT_TRUE(twin.ok());
  SamplingOptions s;
  s.max_new_tokens = 5;
  std::vector<int32_t> first;
  ASSERT_TRUE(engine_->Generate(**seq, s, [&](int32_t t) { first.push_back(t); return true; }, nullptr).ok());
  EXPECT_EQ(first.size(), 5u);
  EXPECT_EQ((*seq)->length(), 4 + 5);  // every emitted token is part of the sequence
  // Continuing equals one longer run on the fork (lazy feeding loses nothing).
  std::vector<int32_t> more, longer;
  ASSERT_TRUE(engine_->Generate(**seq, s, [&](int32_t t) { more.push_back(t); return true; }, nullptr).ok());
  s.max_new_tokens = 10;
  ASSERT_TRUE(engine_->Generate(**twin, s, [&](int32_t t) { longer.push_back(t); return true; }, nullptr).ok());
  first.insert(first.end(), more.begin(), more.end());
  EXPECT_EQ(first, longer);
  // on_token returning false stops at once.
  int calls = 0;
  ASSERT_TRUE(engine_->Generate(**seq, s, [&](int32_t) { return ++calls < 2; }, nullptr).ok());
  EXPECT_EQ(calls, 2);
}

TEST_F(EngineTest, ForkIsIndependent) {
  auto seq = engine_->NewSequence(32);
  ASSERT_TRUE((*seq)->Prefill(Text({2, 105, 120}), nullptr).ok());
  const std::vector<float> before = (*seq)->logits();
  auto fork = (*seq)->Fork();
  ASSERT_TRUE(fork.ok());
  ASSERT_TRUE((*fork)->Prefill(Text({130, 131}), nullptr).ok());
  EXPECT_EQ((*seq)->logits(), before);
  EXPECT_EQ((*seq)->length(), 3);
  EXPECT_EQ((*fork)->length(), 5);
  EXPECT_GT((*fork)->memory_bytes(), 0u);
  // Same continuation on the original gives the fork's logits.
  ASSERT_TRUE((*seq)->Prefill(Text({130, 131}), nullptr).ok());
  EXPECT_EQ((*seq)->logits(), (*fork)->logits());
}

// Largest |a - b| over two logit rows (of different lengths: infinity).
float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || a.empty()) return INFINITY;
  float m = 0.f;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// Note [Fork rings] (engine/model/kv_cache.cc): a fork whose rings are made for steps of 6 tokens (the tiny model's
// window of 8 then needs 13 rows; the question runs again the provisional tail of 5 with it, and generation wraps
// them) answers as the sequence it was forked from does when given the same tokens, before and after a step of 7
// tokens grows its rings back; and bit for bit as a fork with full rings (the default fork_chunk_tokens, which
// here keeps all 64 positions). Against its origin only float rounding may differ (the CPU backend's products
// differ in the last bits between separately allocated buffers, a fork with full rings alike).
TEST(EngineForkRingsTest, AForkWithSmallRingsAnswersAsItsOriginAndGrowsForALongStep) {
  std::unique_ptr<Engine> engines[2];
  for (int e = 0; e < 2; ++e) {
    EngineOptions o;
    o.checkpoint_dir = testing::TinyF32();
    o.num_threads = 2;
    if (e == 0) o.fork_chunk_tokens = 6;
    auto loaded = Engine::Load(o);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    engines[e] = *std::move(loaded);
  }
  const auto text = [](std::vector<int32_t> ids) {
    PromptChunk c;
    c.types.assign(ids.size(), TokenType::kText);
    c.ids = std::move(ids);
    return c;
  };
  // 21 positions: the first 16 final, the last 5 a provisional tail (the CPU backend keeps one), which the fork
  // runs again, reading the window before it from its copied ring.
  std::vector<int32_t> ids = {2};
  for (int32_t i = 0; i < 20; ++i) ids.push_back(105 + 3 * i);
  std::unique_ptr<Sequence> origins[2], forks[2];
  size_t bytes[2] = {};
  for (int e = 0; e < 2; ++e) {
    auto origin = engines[e]->NewSequence(64);
    ASSERT_TRUE(origin.ok());
    ASSERT_TRUE((*origin)->Prefill(text(ids), nullptr).ok());
    auto fork = (*origin)->Fork();
    ASSERT_TRUE(fork.ok()) << fork.status();
    bytes[e] = (*fork)->memory_bytes();
    origins[e] = *std::move(origin);
    forks[e] = *std::move(fork);
  }
  EXPECT_LT(bytes[0], bytes[1]);
  EXPECT_EQ(bytes[1], origins[1]->memory_bytes());
  // Every sequence takes the same tokens; `check` compares the small-ring fork with its origin and the other fork.
  const auto check = [&](const char* when) {
    SCOPED_TRACE(when);
    EXPECT_LE(MaxAbsDiff(forks[0]->logits(), origins[0]->logits()), 1e-4f);
    EXPECT_EQ(forks[0]->logits(), forks[1]->logits());
  };
  for (Sequence* seq : {forks[0].get(), forks[1].get(), origins[0].get()}) {
    ASSERT_TRUE(seq->Prefill(text({140}), nullptr).ok());  // a step of 6 with the tail: no growth
  }
  EXPECT_EQ(forks[0]->memory_bytes(), bytes[0]);
  check("question");
  for (int i = 0; i < 12; ++i) {  // one position a step, wrapping the 13-row ring
    const int32_t token = 160 + 7 * i;
    for (Sequence* seq : {forks[0].get(), forks[1].get(), origins[0].get()}) {
      ASSERT_TRUE(seq->Prefill(text({token}), nullptr).ok());
    }
  }
  check("after 12 single steps");
  for (Sequence* seq : {forks[0].get(), forks[1].get(), origins[0].get()}) {
    ASSERT_TRUE(seq->Prefill(text({150, 151, 152, 153, 154, 155, 156}), nullptr).ok());  // grows the small rings
  }
  EXPECT_EQ(forks[0]->memory_bytes(), forks[1]->memory_bytes());
  check("a step of 7");
  EngineOptions bad;
  bad.checkpoint_dir = testing::TinyF32();
  bad.fork_chunk_tokens = 0;
  EXPECT_EQ(Engine::Load(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, BatchedGenerationEqualsSeparateRuns) {
  auto prefix = engine_->NewSequence(64);
  ASSERT_TRUE((*prefix)->Prefill(Text({2, 105, 120, 121}), nullptr).ok());
  std::vector<std::unique_ptr<Sequence>> forks, twins;
  for (const std::vector<int32_t>& q : {std::vector<int32_t>{130, 131}, std::vector<int32_t>{140}}) {
    auto f = (*prefix)->Fork();
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE((*f)->Prefill(Text(q), nullptr).ok());
    auto twin = (*f)->Fork();
    ASSERT_TRUE(twin.ok());
    forks.push_back(*std::move(f));
    twins.push_back(*std::move(twin));
  }
  SamplingOptions s;
  s.max_new_tokens = 6;
  std::vector<std::vector<int32_t>> batched(2), separate(2);
  ASSERT_TRUE(engine_->GenerateBatch({forks[0].get(), forks[1].get()}, s,
                                     [&](size_t i, int32_t t) { batched[i].push_back(t); return true; }, nullptr)
                  .ok());
  for (size_t i = 0; i < 2; ++i) {
    ASSERT_TRUE(engine_->Generate(*twins[i], s, [&](int32_t t) { separate[i].push_back(t); return true; }, nullptr).ok());
  }
  EXPECT_EQ(batched, separate);
  EXPECT_EQ(batched[0].size(), 6u);
  // The batched step left each sequence where a separate run leaves it (fp32: within rounding).
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(forks[i]->length(), twins[i]->length());
    const std::vector<float>& a = forks[i]->logits();
    const std::vector<float>& b = twins[i]->logits();
    ASSERT_EQ(a.size(), b.size());
    for (size_t j = 0; j < a.size(); ++j) ASSERT_NEAR(a[j], b[j], 1e-4f * (1.0f + std::abs(b[j]))) << j;
  }
  // A sequence may not appear twice in one batch.
  EXPECT_EQ(engine_->GenerateBatch({forks[0].get(), forks[0].get()}, s, [](size_t, int32_t) { return true; }, nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// Greedy tokens are chosen on the backend (Backend::ArgmaxRows), the logits left there until logits() asks: every
// token, the first one after the prefill included, is Sampler's greedy choice over logits() at that point, and a
// twin that never looks at the logits emits the same tokens and ends with the same logits.
TEST_F(EngineTest, GreedyTokensAreTheSamplersChoiceOverTheLogits) {
  auto seq = engine_->NewSequence(64);
  ASSERT_TRUE((*seq)->Prefill(Text({2, 105, 120, 121}), nullptr).ok());
  auto twin = (*seq)->Fork();
  ASSERT_TRUE(twin.ok());
  Sampler greedy(SamplingOptions{}, engine_->info().suppress_ids);
  SamplingOptions s;
  s.max_new_tokens = 8;
  std::vector<int32_t> checked, blind;
  ASSERT_TRUE(engine_->Generate(**seq, s, [&](int32_t t) {
    EXPECT_EQ(t, greedy.Sample((*seq)->logits())) << "token " << checked.size();
    checked.push_back(t);
    return true;
  }, nullptr).ok());
  ASSERT_TRUE(engine_->Generate(**twin, s, [&](int32_t t) { blind.push_back(t); return true; }, nullptr).ok());
  EXPECT_EQ(checked.size(), 8u);
  EXPECT_EQ(blind, checked);
  EXPECT_EQ((*twin)->logits(), (*seq)->logits());
  EXPECT_EQ((*seq)->logits().size(), 512u);
  // Sampling at a temperature draws from the same logits on the host: a Sampler with the same seed over
  // logits() follows it token for token (several seeds: a run may draw a stop id at once).
  int drawn = 0;
  for (uint64_t seed = 0; seed < 6; ++seed) {
    auto fork = (*twin)->Fork();
    ASSERT_TRUE(fork.ok());
    SamplingOptions hot = s;
    hot.temperature = 1.0f;
    hot.seed = seed;
    Sampler follow(hot, engine_->info().suppress_ids);
    ASSERT_TRUE(engine_->Generate(**fork, hot, [&](int32_t t) {
      EXPECT_EQ(t, follow.Sample((*fork)->logits())) << "seed " << seed;
      ++drawn;
      return true;
    }, nullptr).ok());
  }
  EXPECT_GT(drawn, 8);
}

// The same in lockstep: one batched step feeds the pending tokens and chooses every next token on the backend;
// each is Sampler's greedy choice over that sequence's logits().
TEST_F(EngineTest, BatchedGreedyTokensAreTheSamplersChoiceOverTheLogits) {
  auto prefix = engine_->NewSequence(64);
  ASSERT_TRUE((*prefix)->Prefill(Text({2, 105, 120, 121}), nullptr).ok());
  std::vector<std::unique_ptr<Sequence>> forks;
  for (int32_t q : {130, 140, 150}) {
    auto f = (*prefix)->Fork();
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE((*f)->Prefill(Text({q}), nullptr).ok());
    forks.push_back(*std::move(f));
  }
  Sampler greedy(SamplingOptions{}, engine_->info().suppress_ids);
  SamplingOptions s;
  s.max_new_tokens = 6;
  std::vector<int> emitted(3, 0);
  ASSERT_TRUE(engine_->GenerateBatch({forks[0].get(), forks[1].get(), forks[2].get()}, s, [&](size_t i, int32_t t) {
    EXPECT_EQ(t, greedy.Sample(forks[i]->logits())) << "sequence " << i << " token " << emitted[i];
    ++emitted[i];
    return true;
  }, nullptr).ok());
  EXPECT_EQ(emitted, std::vector<int>(3, 6));
}

// With every row kept on the host (set_keep_all_logits), greedy generation samples there; its tokens are still
// Sampler's choice over the last kept row, and each generated position adds one row.
TEST_F(EngineTest, KeptLogitsGenerateOnTheHost) {
  auto seq = engine_->NewSequence(64);
  (*seq)->set_keep_all_logits(true);
  ASSERT_TRUE((*seq)->Prefill(Text({2, 105, 120, 121}), nullptr).ok());
  EXPECT_EQ((*seq)->logits().size(), 4u * 512);
  Sampler greedy(SamplingOptions{}, engine_->info().suppress_ids);
  SamplingOptions s;
  s.max_new_tokens = 4;
  int emitted = 0;
  ASSERT_TRUE(engine_->Generate(**seq, s, [&](int32_t t) {
    const std::vector<float>& lg = (*seq)->logits();
    EXPECT_EQ(t, greedy.Sample(std::span<const float>(lg.data() + lg.size() - 512, 512))) << "token " << emitted;
    ++emitted;
    return true;
  }, nullptr).ok());
  EXPECT_EQ(emitted, 4);
  EXPECT_EQ((*seq)->logits().size(), (4u + 3) * 512);  // the last token is still pending
}

TEST_F(EngineTest, VisionBlockMayNotStraddleChunks) {
  const testing::Golden g = testing::Golden::Load();
  auto seq = engine_->NewSequence(64);
  ASSERT_TRUE((*seq)->Prefill(g.Chunk("p1", 0, 15), nullptr).ok());  // ends inside frame 1
  EXPECT_EQ((*seq)->Prefill(g.Chunk("p1", 15, 30), nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST(EngineLoadTest, ReportsWeightProgressUpToTheWholeCheckpoint) {
  EngineOptions o;
  o.checkpoint_dir = testing::TinyBf16();
  std::vector<std::pair<int64_t, int64_t>> calls;
  o.on_load_progress = [&](int64_t done, int64_t total) { calls.push_back({done, total}); };
  auto engine = Engine::Load(o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  ASSERT_GT(calls.size(), 10u);  // one per tensor
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].second, calls[0].second);
    EXPECT_GT(calls[i].first, i ? calls[i - 1].first : 0);
  }
  EXPECT_EQ(calls.back().first, calls.back().second);
  // Every tensor's bytes: the file minus its header (8-byte length + JSON), the tied lm_head aside.
  const auto file_bytes = std::filesystem::file_size(std::filesystem::path(o.checkpoint_dir) / "model.safetensors");
  EXPECT_LE(calls.back().second, static_cast<int64_t>(file_bytes));
  EXPECT_GT(calls.back().second, static_cast<int64_t>(file_bytes) * 9 / 10);
}

// The warm-up at load (EngineOptions::warmup_tokens) runs a throwaway request of frames, audio and text, and leaves
// nothing behind: a request after it gives the same tokens and the same logits, bit for bit, as on an engine loaded
// without it. A warm-up longer than the context limit is cut to it; a negative count is refused before loading.
TEST(EngineLoadTest, WarmUpAtLoadLeavesRequestsAsTheyWere) {
  const testing::Golden g = testing::Golden::Load();
  auto run = [&](int warmup_tokens, int64_t max_context, double* warmup_seconds) {
    EngineOptions o;
    o.checkpoint_dir = testing::TinyF32();
    o.num_threads = 2;
    o.max_context = max_context;
    o.warmup_tokens = warmup_tokens;
    auto engine = Engine::Load(o);
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return std::make_pair(std::vector<int32_t>{}, std::vector<float>{});
    *warmup_seconds = (*engine)->warmup_seconds();
    auto seq = (*engine)->NewSequence(64);
    EXPECT_TRUE(seq.ok());
    EXPECT_TRUE((*seq)->Prefill(g.Chunk("p1", 0, g.length("p1")), nullptr).ok());
    SamplingOptions s;
    s.max_new_tokens = 5;
    std::vector<int32_t> tokens;
    EXPECT_TRUE((*engine)->Generate(**seq, s, [&](int32_t t) { tokens.push_back(t); return true; }, nullptr).ok());
    return std::make_pair(tokens, (*seq)->logits());
  };
  double cold_s = -1, warm_s = -1, capped_s = -1;
  const auto cold = run(0, 0, &cold_s);
  const auto warm = run(96, 0, &warm_s);
  const auto capped = run(100000, 128, &capped_s);
  EXPECT_EQ(cold_s, 0.0);
  EXPECT_GT(warm_s, 0.0);
  EXPECT_GT(capped_s, 0.0);
  ASSERT_FALSE(cold.first.empty());  // the tiny model may reach a stop id before 5
  EXPECT_EQ(warm.first, cold.first);
  EXPECT_EQ(capped.first, cold.first);
  ASSERT_FALSE(cold.second.empty());
  EXPECT_EQ(warm.second, cold.second);
  EXPECT_EQ(capped.second, cold.second);

  EngineOptions bad;
  bad.checkpoint_dir = testing::TinyF32();
  bad.warmup_tokens = -1;
  EXPECT_EQ(Engine::Load(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(EngineLoadTest, CudaIsAClearErrorWhereItCannotRun) {
  EngineOptions o;
  o.checkpoint_dir = testing::TinyBf16();
  o.backend = BackendKind::kCuda;
  auto e = Engine::Load(o);
#if !defined(AVSERVE_WITH_CUDA)
  EXPECT_EQ(e.status().code(), absl::StatusCode::kUnimplemented) << e.status();
#else
  // A CUDA build loads on a machine with a GPU and says UNAVAILABLE on one without.
  if (e.ok()) {
    EXPECT_NE((*e)->backend_name().find("cuda"), std::string::npos) << (*e)->backend_name();
  } else {
    EXPECT_EQ(e.status().code(), absl::StatusCode::kUnavailable) << e.status();
  }
#endif
}

}  // namespace
}  // namespace avserve::engine
