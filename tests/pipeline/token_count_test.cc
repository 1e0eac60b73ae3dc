#include "pipeline/token_count.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "ingest/frame_sampler.h"
#include "ingest/media_reader.h"
#include "pipeline/ingest_graph.h"
#include "pipeline/interleaver.h"
#include "tests/pipeline/fake_segments.h"
#include "tests/pipeline/test_util.h"

namespace avserve::pipeline {
namespace {

using ::avserve::testing::FakeMedia;

class TokenCountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokenizer_ = testing::Gemma4TestTokenizer();
    if (tokenizer_ == nullptr) GTEST_SKIP() << "no tokenizer.json: run scripts/fetch_test_data";
  }
  int64_t Produce(const std::vector<ingest::Segment>& segments, Layout layout) {
    Interleaver interleaver(info_, *tokenizer_, StreamOptions{layout, 1000});
    std::vector<engine::PromptChunk> chunks;
    for (const ingest::Segment& seg : segments) EXPECT_TRUE(interleaver.Add(seg, &chunks).ok());
    EXPECT_TRUE(interleaver.Finish(&chunks).ok());
    int64_t total = 0;
    for (const engine::PromptChunk& chunk : chunks) total += static_cast<int64_t>(chunk.size());
    return total;
  }
  const engine::Tokenizer* tokenizer_ = nullptr;
  engine::ModelInfo info_ = testing::Gemma4TestModelInfo();
};

TEST_F(TokenCountTest, PredictsTheProducedCountFromAProbe) {
  struct Case {
    int64_t duration_us;
    double fps;
    bool video, audio;
    Layout layout;
  };
  const Case cases[] = {{3500000, 1.0, true, true, Layout::kInterleaved},
                        {3000000, 1.0, true, false, Layout::kInterleaved},
                        {2040000, 1.0, false, true, Layout::kInterleaved},
                        {7300000, 2.0, true, true, Layout::kInterleaved},
                        {9999999, 0.7, true, true, Layout::kInterleaved},
                        {5000000, 29.97 / 1.001, true, true, Layout::kInterleaved},
                        {4000000, 1.0, true, true, Layout::kReference},
                        {4000000, 1.0, true, false, Layout::kReference}};
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat(c.duration_us, " us at ", c.fps, " fps, video ", c.video, " audio ", c.audio));
    ingest::MediaProbe probe;
    probe.duration_us = c.duration_us;
    probe.has_video = c.video;
    probe.width = 640;
    probe.height = 360;  // budget 70: 288 x 528 -> 6 x 11 patches
    probe.has_audio = c.audio;
    ingest::IngestOptions options;
    options.fps = c.fps;
    const auto plan = PlanStream(probe, options);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->grid_rows * plan->grid_cols, c.video ? 66 : 0);
    const auto segments = testing::MakeFakeSegments(
        {c.duration_us, c.fps, c.video ? 6 : 0, c.video ? 11 : 0, c.audio});
    const auto count = CountTokens(probe, options, StreamOptions{c.layout, 1000}, info_, *tokenizer_);
    ASSERT_TRUE(count.ok()) << count.status();
    EXPECT_EQ(*count, Produce(segments, c.layout));
  }
}

TEST_F(TokenCountTest, RejectsProbesWithNothingToIngest) {
  ingest::MediaProbe probe;
  probe.duration_us = 1000000;
  ingest::IngestOptions options;
  EXPECT_FALSE(CountTokens(probe, options, StreamOptions(), info_, *tokenizer_).ok());
  probe.duration_us = 0;
  probe.has_audio = true;
  EXPECT_FALSE(CountTokens(probe, options, StreamOptions(), info_, *tokenizer_).ok());
  probe.duration_us = 1000000;
  probe.has_audio = true;
  options.fps = 0;
  EXPECT_FALSE(CountTokens(probe, options, StreamOptions(), info_, *tokenizer_).ok());
}

TEST(ReferenceIngestOptionsTest, SamplesExactlyTheRequestedFrames) {
  for (int64_t duration_us : {3000000LL, 10000000LL, 7300001LL, 600000000LL, 1234567LL}) {
    ingest::MediaProbe probe;
    probe.duration_us = duration_us;
    const auto options = ReferenceIngestOptions(probe, ingest::IngestOptions(), 32);
    ASSERT_TRUE(options.ok()) << options.status();
    EXPECT_EQ(ingest::SampleClock(options->fps).SegmentCount(duration_us), 32) << duration_us;
  }
  ingest::MediaProbe empty;
  EXPECT_FALSE(ReferenceIngestOptions(empty, ingest::IngestOptions(), 32).ok());
}

// Real files from the ffmpeg CLI through MediaReader: prediction from the probe == produced.
class TokenCountMediaTest : public TokenCountTest,
                            public ::testing::WithParamInterface<std::tuple<std::string, double>> {};

TEST_P(TokenCountMediaTest, PredictedEqualsProducedOnGeneratedMedia) {
  const auto& [lavfi, fps] = GetParam();
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    absl::StrCat("avserve_token_count_", ::getpid());
  std::filesystem::create_directories(dir);
  const std::string path = (dir / absl::StrCat("m", std::hash<std::string>()(lavfi), ".mkv")).string();
  const std::string cmd = absl::StrCat("ffmpeg -loglevel error -y ", lavfi, " ", path);
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "ffmpeg CLI could not generate " << path;
  ingest::IngestOptions options;
  options.fps = fps;
  auto reader = ingest::MediaReader::OpenFile(path, options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  const auto predicted = CountTokens((*reader)->probe(), options, StreamOptions(), info_, *tokenizer_);
  ASSERT_TRUE(predicted.ok()) << predicted.status();
  std::vector<ingest::Segment> segments;
  while (true) {
    auto next = (*reader)->Next();
    ASSERT_TRUE(next.ok()) << next.status();
    if (!next->has_value()) break;
    segments.push_back(std::move(**next));
  }
  EXPECT_EQ(*predicted, Produce(segments, Layout::kInterleaved));
  std::filesystem::remove_all(dir);
}

// The reference layout through real ingest: MediaReader with ReferenceIngestOptions picks the frames
// transformers picks (indices floor(i * T / 32) of a constant-rate video), and the graph delivers them.
TEST_F(TokenCountTest, ReferenceSamplingPicksTransformersFrames) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            absl::StrCat("avserve_reference_", ::getpid(), ".mkv")).string();
  const std::string cmd = absl::StrCat(
      "ffmpeg -loglevel error -y -f lavfi -i testsrc=size=192x144:rate=30:duration=3 -c:v mpeg4 ", path);
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "ffmpeg CLI could not generate " << path;
  auto probe = ingest::ProbeFile(path);
  ASSERT_TRUE(probe.ok()) << probe.status();
  const auto options = ReferenceIngestOptions(*probe, ingest::IngestOptions(), 32);
  ASSERT_TRUE(options.ok()) << options.status();
  auto reader = ingest::MediaReader::OpenFile(path, *options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<int64_t> pts;
  int64_t tokens = 0;
  const auto count = CountTokens(*probe, *options, StreamOptions{Layout::kReference, 1000}, info_, *tokenizer_);
  ASSERT_TRUE(count.ok()) << count.status();
  const SegmentSource source = [&]() -> absl::StatusOr<std::optional<ingest::Segment>> {
    auto next = (*reader)->Next();
    if (next.ok() && next->has_value() && (*next)->frame.has_value()) pts.push_back((*next)->frame->pts_us);
    return next;
  };
  GraphOptions graph;
  graph.stream = StreamOptions{Layout::kReference, 1000};
  const absl::Status status = RunIngestGraph(
      source, info_, *tokenizer_, graph,
      [&](engine::PromptChunk&& chunk, const IngestProgress&) {
        tokens += static_cast<int64_t>(chunk.size());
        return absl::OkStatus();
      },
      nullptr);
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_EQ(pts.size(), 32u);
  // Matroska stores milliseconds, so compare frame indices (pts * 30 fps), not microseconds.
  for (int i = 0; i < 32; ++i) EXPECT_EQ(std::llround(pts[i] * 30 / 1e6), i * 90 / 32) << "frame " << i;
  EXPECT_EQ(tokens, *count);
  std::filesystem::remove(path);
}

INSTANTIATE_TEST_SUITE_P(
    Media, TokenCountMediaTest,
    ::testing::Values(
        std::make_tuple("-f lavfi -i testsrc=size=320x240:rate=10:duration=3.5 -f lavfi -i "
                        "sine=frequency=440:sample_rate=44100:duration=3.5 -c:v mpeg4 -c:a pcm_s16le",
                        1.0),
        std::make_tuple("-f lavfi -i testsrc=size=160x120:rate=25:duration=3 -c:v mpeg4", 1.0),
        std::make_tuple("-f lavfi -i sine=frequency=300:sample_rate=16000:duration=2.3 -c:a pcm_s16le", 1.0),
        std::make_tuple("-f lavfi -i testsrc=size=320x180:rate=30:duration=2.5 -f lavfi -i "
                        "sine=sample_rate=48000:duration=2.5 -c:v mpeg4 -c:a pcm_s16le",
                        2.0)));

}  // namespace
}  // namespace avserve::pipeline
