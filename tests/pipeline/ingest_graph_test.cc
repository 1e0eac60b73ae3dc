#include "pipeline/ingest_graph.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "pipeline/token_count.h"
#include "tests/pipeline/fake_segments.h"
#include "tests/pipeline/test_util.h"

namespace avserve::pipeline {
namespace {

using ::avserve::testing::FakeMedia;
using engine::PromptChunk;

// A source over pre-built segments that counts how far it has been pulled.
class CountingSource {
 public:
  explicit CountingSource(std::vector<ingest::Segment> segments, int fail_at = -1)
      : segments_(std::move(segments)), fail_at_(fail_at) {}
  SegmentSource AsSource() {
    return [this]() -> absl::StatusOr<std::optional<ingest::Segment>> {
      const int i = pulled_.fetch_add(1);
      if (i == fail_at_) return absl::DataLossError("broken packet");
      if (i >= static_cast<int>(segments_.size())) return std::optional<ingest::Segment>();
      return std::optional<ingest::Segment>(segments_[i]);
    };
  }
  int pulled() const { return pulled_.load(); }

 private:
  std::vector<ingest::Segment> segments_;
  int fail_at_;
  std::atomic<int> pulled_{0};
};

class IngestGraphTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokenizer_ = testing::Gemma4TestTokenizer();
    if (tokenizer_ == nullptr) GTEST_SKIP() << "no tokenizer.json: run scripts/fetch_test_data";
    media_ = FakeMedia{60000000, 1.0, 1, 4, true};
    segments_ = testing::MakeFakeSegments(media_);
    options_.stream.max_chunk_tokens = 40;  // about one segment per chunk
    options_.queue_chunks = 2;
    options_.media_us_total = media_.duration_us;
  }
  const engine::Tokenizer* tokenizer_ = nullptr;
  engine::ModelInfo info_ = testing::Gemma4TestModelInfo();
  FakeMedia media_;
  std::vector<ingest::Segment> segments_;
  GraphOptions options_;
};

TEST_F(IngestGraphTest, DeliversEveryChunkInOrderOnTheCallingThread) {
  StreamPlan plan{60, 1, 4, testing::FakeAudioFrames(media_)};
  options_.tokens_total = CountPlanTokens(plan, 1.0, options_.stream, *tokenizer_);
  // The reference: the interleaver driven directly.
  Interleaver direct(info_, *tokenizer_, options_.stream);
  std::vector<PromptChunk> expected;
  for (const auto& seg : segments_) ASSERT_TRUE(direct.Add(seg, &expected).ok());
  ASSERT_TRUE(direct.Finish(&expected).ok());

  CountingSource source(segments_);
  const std::thread::id caller = std::this_thread::get_id();
  std::vector<PromptChunk> got;
  IngestProgress last;
  const absl::Status status = RunIngestGraph(
      source.AsSource(), info_, *tokenizer_, options_,
      [&](PromptChunk&& chunk, const IngestProgress& progress) {
        EXPECT_EQ(std::this_thread::get_id(), caller);
        EXPECT_GE(progress.media_us_ingested, last.media_us_ingested);
        last = progress;
        got.push_back(std::move(chunk));
        return absl::OkStatus();
      },
      nullptr);
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].ids, expected[i].ids);
    EXPECT_EQ(got[i].vision_patches, expected[i].vision_patches);
    EXPECT_EQ(got[i].audio_frames, expected[i].audio_frames);
  }
  EXPECT_EQ(last.tokens_delivered, options_.tokens_total);
  EXPECT_EQ(last.media_us_ingested, media_.duration_us);
}

TEST_F(IngestGraphTest, IngestStaysAFewSegmentsAheadOfASlowConsumer) {
  CountingSource source(segments_);
  int max_ahead = 0, chunks = 0;
  const absl::Status status = RunIngestGraph(
      source.AsSource(), info_, *tokenizer_, options_,
      [&](PromptChunk&&, const IngestProgress&) {
        std::this_thread::sleep_for(std::chrono::milliseconds(chunks++ < 3 ? 30 : 0));
        max_ahead = std::max(max_ahead, source.pulled() - chunks);
        return absl::OkStatus();
      },
      nullptr);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_LE(max_ahead, 10) << "the queue between ingest and the consumer is not bounded";
  EXPECT_GT(source.pulled(), 60);
}

TEST_F(IngestGraphTest, ASourceErrorIsReportedOnce) {
  CountingSource source(segments_, /*fail_at=*/5);
  int chunks = 0;
  const absl::Status status = RunIngestGraph(
      source.AsSource(), info_, *tokenizer_, options_,
      [&](PromptChunk&&, const IngestProgress&) {
        ++chunks;
        return absl::OkStatus();
      },
      nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_LE(chunks, 6);
  EXPECT_EQ(source.pulled(), 6);  // nothing pulled after the error
}

TEST_F(IngestGraphTest, AConsumerErrorStopsIngest) {
  CountingSource source(segments_);
  const absl::Status status = RunIngestGraph(
      source.AsSource(), info_, *tokenizer_, options_,
      [&](PromptChunk&&, const IngestProgress&) { return absl::ResourceExhaustedError("KV cache full"); },
      nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_LT(source.pulled(), 20);
}

TEST_F(IngestGraphTest, CancellationReturnsCancelled) {
  CountingSource source(segments_);
  std::atomic<bool> cancel{false};
  int chunks = 0;
  const absl::Status status = RunIngestGraph(
      source.AsSource(), info_, *tokenizer_, options_,
      [&](PromptChunk&&, const IngestProgress&) {
        if (++chunks == 3) cancel = true;
        return absl::OkStatus();
      },
      &cancel);
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(chunks, 3);
  EXPECT_LT(source.pulled(), 20);
}

TEST_F(IngestGraphTest, AMalformedSegmentFailsTheRequest) {
  segments_[2].frame->grid_cols = 5;
  CountingSource source(segments_);
  const absl::Status status = RunIngestGraph(
      source.AsSource(), info_, *tokenizer_, options_,
      [&](PromptChunk&&, const IngestProgress&) { return absl::OkStatus(); }, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace avserve::pipeline
