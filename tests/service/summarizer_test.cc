#include "service/summarizer.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/service/fake_backend.h"

namespace avserve::service {
namespace {

struct Chunk {
  int index, num;
  int64_t start_us, end_us;
  bool done;
};

class Recording final : public SummarizeObserver {
 public:
  void OnIngestProgress(int64_t, int64_t) override {}
  void OnPrefillProgress(int, int64_t, int64_t) override {}
  void OnAnswerDelta(int q, std::string_view text) override { text_ += std::string(text); }
  void OnChunk(int i, int n, int64_t s, int64_t e, bool done) override { chunks_.push_back({i, n, s, e, done}); }
  std::string text_;
  std::vector<Chunk> chunks_;
};

SummarizeSpec Spec(int64_t duration_s) {
  SummarizeSpec spec;
  spec.media = {"sha256:" + std::string(64, 'c'), "/nonexistent", duration_s * 1000000, true, true};
  spec.sampling.max_new_tokens = 64;
  return spec;
}

TEST(SummarizerTest, PlanChunkUsSplitsIntoWholeSecondsThatFit) {
  EXPECT_EQ(PlanChunkUs(60'000'000, 1000, 2000), 60'000'000);  // fits
  EXPECT_EQ(PlanChunkUs(60'000'000, 6000, 2000), 20'000'000);  // 3 chunks
  EXPECT_EQ(PlanChunkUs(61'500'000, 6001, 2000), 15'000'000);  // 4 chunks, rounded down
  EXPECT_EQ(PlanChunkUs(2'000'000, 100000, 10), 1'000'000);    // never below 1 s
}

TEST(SummarizerTest, ShortMediaIsOneAskWithStreamedText) {
  testing::FakeBackend backend({0, 0, 16, 262144, 1 << 20});
  Recording rec;
  std::atomic<bool> cancel{false};
  auto out = Summarize(backend, Spec(10), rec, cancel);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->num_chunks, 1);
  EXPECT_TRUE(rec.chunks_.empty());
  EXPECT_EQ(rec.text_, out->outcome.questions[0].answer);
  EXPECT_NE(rec.text_.find("MM:SS"), std::string::npos);  // the fake echoes the question
}

TEST(SummarizerTest, LongMediaIsMappedInCoveringChunksThenReduced) {
  // 60 s at ~131 tokens/s is ~7900 tokens; a 3000-token context forces several chunks.
  testing::FakeBackend backend({0, 0, 16, 3000, 1 << 20});
  Recording rec;
  std::atomic<bool> cancel{false};
  auto out = Summarize(backend, Spec(60), rec, cancel);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_GT(out->num_chunks, 1);
  ASSERT_EQ(rec.chunks_.size(), 2u * out->num_chunks);
  int64_t covered = 0;
  for (size_t i = 0; i < rec.chunks_.size(); i += 2) {
    EXPECT_EQ(rec.chunks_[i].start_us, covered);
    EXPECT_FALSE(rec.chunks_[i].done);
    EXPECT_TRUE(rec.chunks_[i + 1].done);
    covered = rec.chunks_[i].end_us;
  }
  EXPECT_EQ(covered, 60'000'000);
  EXPECT_EQ(backend.asks(), out->num_chunks);
  // Only the reduce step streams; it saw one note block per chunk.
  EXPECT_EQ(rec.text_.rfind("Summary of " + std::to_string(out->num_chunks) + " parts", 0), 0u) << rec.text_;
}

TEST(SummarizerTest, CancellationStopsTheMapSteps) {
  testing::FakeBackend backend({0, 0, 16, 3000, 1 << 20});
  Recording rec;
  std::atomic<bool> cancel{true};
  EXPECT_EQ(Summarize(backend, Spec(60), rec, cancel).status().code(), absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace avserve::service
