#include "pipeline/interleaver.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/pipeline/fake_segments.h"
#include "tests/pipeline/test_util.h"

namespace avserve::pipeline {
namespace {

using ::avserve::testing::FakeMedia;
using ::avserve::testing::MakeFakeSegments;
using engine::PromptChunk;
using engine::TokenType;

// Everything the interleaver emitted, concatenated, plus the chunks themselves.
struct Stream {
  std::vector<PromptChunk> chunks;
  PromptChunk all;
};

Stream RunInterleaver(const std::vector<ingest::Segment>& segments, const StreamOptions& options) {
  const engine::ModelInfo info = testing::Gemma4TestModelInfo();
  Interleaver interleaver(info, *testing::Gemma4TestTokenizer(), options);
  Stream out;
  for (const ingest::Segment& seg : segments) EXPECT_TRUE(interleaver.Add(seg, &out.chunks).ok());
  EXPECT_TRUE(interleaver.Finish(&out.chunks).ok());
  for (const PromptChunk& c : out.chunks) {
    out.all.ids.insert(out.all.ids.end(), c.ids.begin(), c.ids.end());
    out.all.types.insert(out.all.types.end(), c.types.begin(), c.types.end());
    out.all.vision_patches.insert(out.all.vision_patches.end(), c.vision_patches.begin(), c.vision_patches.end());
    out.all.vision_positions.insert(out.all.vision_positions.end(), c.vision_positions.begin(),
                                    c.vision_positions.end());
    out.all.audio_frames.insert(out.all.audio_frames.end(), c.audio_frames.begin(), c.audio_frames.end());
  }
  EXPECT_EQ(interleaver.tokens_emitted(), static_cast<int64_t>(out.all.size()));
  return out;
}

// Walks the interleaved stream segment by segment, checking every token against the contract.
class StreamWalker {
 public:
  explicit StreamWalker(const PromptChunk& all) : all_(all), info_(testing::Gemma4TestModelInfo()) {}

  void ExpectSegment(int64_t k, int64_t start_us, int video_tokens, int audio_frames) {
    SCOPED_TRACE(::testing::Message() << "segment " << k);
    for (int32_t id : TimestampIds(*testing::Gemma4TestTokenizer(), k, start_us)) Expect(id, TokenType::kText);
    if (video_tokens > 0) {
      Expect(info_.boi_id, TokenType::kText);
      for (int i = 0; i < video_tokens; ++i) Expect(info_.video_id, TokenType::kVideo);
      Expect(info_.eoi_id, TokenType::kText);
    }
    if (audio_frames > 0) {
      Expect(info_.boa_id, TokenType::kText);
      for (int i = 0; i < audio_frames; ++i) Expect(info_.audio_id, TokenType::kAudio);
      Expect(info_.eoa_id, TokenType::kText);
    }
  }
  bool AtEnd() const { return pos_ == all_.size(); }

 private:
  void Expect(int32_t id, TokenType type) {
    ASSERT_LT(pos_, all_.size());
    EXPECT_EQ(all_.ids[pos_], id) << "position " << pos_;
    EXPECT_EQ(all_.types[pos_], type) << "position " << pos_;
    ++pos_;
  }
  const PromptChunk& all_;
  engine::ModelInfo info_;
  size_t pos_ = 0;
};

class InterleaverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (testing::Gemma4TestTokenizer() == nullptr) GTEST_SKIP() << "no tokenizer.json: run scripts/fetch_test_data";
  }
};

TEST_F(InterleaverTest, InterleavesSecondBySecondWithPartialLastSecond) {
  // 3.5 s: 4 segments; 56000 samples = 87.5 -> 88 audio frames: 25, 25, 25, 13.
  const auto segments = MakeFakeSegments({3500000, 1.0, 2, 3, true});
  const Stream stream = RunInterleaver(segments, StreamOptions());
  StreamWalker walker(stream.all);
  const int audio[] = {25, 25, 25, 13};
  for (int k = 0; k < 4; ++k) walker.ExpectSegment(k, k * 1000000, 6, audio[k]);
  EXPECT_TRUE(walker.AtEnd());
  // Patches and audio rows follow their tokens in order; positions are (x = column, y = row).
  ASSERT_EQ(stream.all.vision_patches.size(), 4u * 6 * ingest::kPatchDim);
  EXPECT_EQ(stream.all.vision_patches[5 * ingest::kPatchDim], 5.0f);                // segment 0, patch 5
  EXPECT_EQ(stream.all.vision_patches[7 * ingest::kPatchDim], 1001.0f);             // segment 1, patch 1
  EXPECT_EQ(stream.all.vision_positions, (std::vector<int32_t>{0, 0, 1, 0, 2, 0, 0, 1, 1, 1, 2, 1,  //
                                                               0, 0, 1, 0, 2, 0, 0, 1, 1, 1, 2, 1,  //
                                                               0, 0, 1, 0, 2, 0, 0, 1, 1, 1, 2, 1,  //
                                                               0, 0, 1, 0, 2, 0, 0, 1, 1, 1, 2, 1}));
  ASSERT_EQ(stream.all.audio_frames.size(), 88u * ingest::kAudioFrameSamples);
  EXPECT_EQ(stream.all.audio_frames[87 * ingest::kAudioFrameSamples], 87.0f);
}

TEST_F(InterleaverTest, VideoWithoutAudioHasNoAudioBlocks) {
  const Stream stream = RunInterleaver(MakeFakeSegments({3000000, 1.0, 1, 4, false}), StreamOptions());
  StreamWalker walker(stream.all);
  for (int k = 0; k < 3; ++k) walker.ExpectSegment(k, k * 1000000, 4, 0);
  EXPECT_TRUE(walker.AtEnd());
  EXPECT_TRUE(stream.all.audio_frames.empty());
}

TEST_F(InterleaverTest, AudioOnlyCarriesTimestampsAndAudio) {
  const Stream stream = RunInterleaver(MakeFakeSegments({2040000, 1.0, 0, 0, true}), StreamOptions());
  StreamWalker walker(stream.all);
  walker.ExpectSegment(0, 0, 0, 25);
  walker.ExpectSegment(1, 1000000, 0, 25);
  walker.ExpectSegment(2, 2000000, 0, 1);
  EXPECT_TRUE(walker.AtEnd());
  EXPECT_TRUE(stream.all.vision_patches.empty());
}

TEST_F(InterleaverTest, TwoFramesPerSecondSplitTheAudio) {
  // Segments of 0.5 s: audio frames starting in [0, 500) ms are 0..12 (13), then 13..24 (12).
  const Stream stream = RunInterleaver(MakeFakeSegments({2200000, 2.0, 1, 1, true}), StreamOptions());
  StreamWalker walker(stream.all);
  walker.ExpectSegment(0, 0, 1, 13);
  walker.ExpectSegment(1, 500000, 1, 12);
  walker.ExpectSegment(2, 1000000, 1, 13);
  walker.ExpectSegment(3, 1500000, 1, 12);
  walker.ExpectSegment(4, 2000000, 1, 5);  // 2.2 s = 35200 samples = 55 frames; 50..54
  EXPECT_TRUE(walker.AtEnd());
}

TEST_F(InterleaverTest, HalfAFramePerSecondUsesTwoSecondSegments) {
  const Stream stream = RunInterleaver(MakeFakeSegments({5000000, 0.5, 2, 2, true}), StreamOptions());
  StreamWalker walker(stream.all);
  walker.ExpectSegment(0, 0, 4, 50);
  walker.ExpectSegment(1, 2000000, 4, 50);
  walker.ExpectSegment(2, 4000000, 4, 25);
  EXPECT_TRUE(walker.AtEnd());
}

TEST_F(InterleaverTest, ChunksNeverSplitAFrameBlock) {
  const auto segments = MakeFakeSegments({4000000, 1.0, 3, 3, true});
  const Stream whole = RunInterleaver(segments, StreamOptions{Layout::kInterleaved, 0});
  for (int max_tokens : {1, 7, 11, 12, 40, 100}) {
    SCOPED_TRACE(max_tokens);
    const Stream chunked = RunInterleaver(segments, StreamOptions{Layout::kInterleaved, max_tokens});
    EXPECT_EQ(chunked.all.ids, whole.all.ids);
    EXPECT_EQ(chunked.all.vision_patches, whole.all.vision_patches);
    EXPECT_EQ(chunked.all.audio_frames, whole.all.audio_frames);
    for (const PromptChunk& chunk : chunked.chunks) {
      size_t video = 0, audio = 0;
      for (TokenType t : chunk.types) {
        video += t == TokenType::kVideo;
        audio += t == TokenType::kAudio;
      }
      EXPECT_EQ(chunk.vision_patches.size(), video * ingest::kPatchDim);
      EXPECT_EQ(chunk.vision_positions.size(), video * 2);
      EXPECT_EQ(chunk.audio_frames.size(), audio * ingest::kAudioFrameSamples);
      EXPECT_TRUE(video % 9 == 0) << "a frame block was split";
      // Over the limit only when the chunk is one frame block (9 soft tokens + 2 markers).
      if (chunk.size() > static_cast<size_t>(max_tokens)) {
        EXPECT_EQ(chunk.size(), 11u);
        EXPECT_EQ(video, 9u);
      }
    }
  }
}

TEST_F(InterleaverTest, RejectsMalformedSegments) {
  const engine::ModelInfo info = testing::Gemma4TestModelInfo();
  auto segments = MakeFakeSegments({2000000, 1.0, 2, 2, true});
  std::vector<PromptChunk> out;
  {
    Interleaver interleaver(info, *testing::Gemma4TestTokenizer(), StreamOptions());
    EXPECT_FALSE(interleaver.Add(segments[1], &out).ok());  // out of order
  }
  {
    Interleaver interleaver(info, *testing::Gemma4TestTokenizer(), StreamOptions());
    segments[0].frame->patches.pop_back();
    EXPECT_FALSE(interleaver.Add(segments[0], &out).ok());
  }
  {
    Interleaver interleaver(info, *testing::Gemma4TestTokenizer(), StreamOptions());
    segments[1].index = 0;
    segments[1].audio.num_frames += 1;
    EXPECT_FALSE(interleaver.Add(segments[1], &out).ok());
  }
}

TEST(TimestampTest, FormatsMinutesPastAnHour) {
  EXPECT_EQ(FormatTimestamp(0), "00:00");
  EXPECT_EQ(FormatTimestamp(59999999), "00:59");
  EXPECT_EQ(FormatTimestamp(3599900000), "59:59");
  EXPECT_EQ(FormatTimestamp(3600000000), "60:00");
  EXPECT_EQ(FormatTimestamp(6000000000), "100:00");
}

}  // namespace
}  // namespace avserve::pipeline
