#include "pipeline/prompt.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "ingest/media_reader.h"
#include "nlohmann/json.hpp"
#include "pipeline/interleaver.h"
#include "tests/pipeline/fake_segments.h"
#include "tests/pipeline/test_util.h"

namespace avserve::pipeline {
namespace {

using ::avserve::testing::Gemma4TestTokenizer;
using Json = nlohmann::json;

class PromptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokenizer_ = Gemma4TestTokenizer();
    if (tokenizer_ == nullptr) GTEST_SKIP() << "no tokenizer.json: run scripts/fetch_test_data";
  }

  // prefix + stream + suffix, and the token types of the whole prompt.
  std::pair<std::vector<int32_t>, std::vector<int>> Assemble(const MediaPromptOptions& options,
                                                             const std::vector<ingest::Segment>& segments,
                                                             const std::string& question) {
    std::vector<int32_t> ids = *MediaPrefixIds(*tokenizer_, options);
    std::vector<int> types(ids.size(), 0);
    Interleaver interleaver(info_, *tokenizer_, StreamOptions{options.layout, 512});
    std::vector<engine::PromptChunk> chunks;
    for (const ingest::Segment& seg : segments) EXPECT_TRUE(interleaver.Add(seg, &chunks).ok());
    EXPECT_TRUE(interleaver.Finish(&chunks).ok());
    for (const engine::PromptChunk& chunk : chunks) {
      ids.insert(ids.end(), chunk.ids.begin(), chunk.ids.end());
      for (engine::TokenType t : chunk.types) types.push_back(static_cast<int>(t));
    }
    const std::vector<int32_t> suffix = *QuestionSuffixIds(*tokenizer_, options, question);
    ids.insert(ids.end(), suffix.begin(), suffix.end());
    types.resize(ids.size(), 0);
    return {ids, types};
  }

  const engine::Tokenizer* tokenizer_ = nullptr;
  engine::ModelInfo info_ = testing::Gemma4TestModelInfo();
};

// transformers' Gemma4UnifiedProcessor on synthetic videos (tests/data/pipeline/make_device_goldens.py):
// 32 frames at indices floor(i * T / 32), timestamps index / fps, then one audio block.
TEST_F(PromptTest, ReferenceLayoutMatchesTransformersProcessor) {
  const Json goldens =
      Json::parse(testing::ReadFile(testing::TestDataPath("pipeline/reference_goldens.json")))["goldens"];
  ASSERT_GE(goldens.size(), 4u);
  for (const Json& g : goldens) {
    const int total_frames = g["frames"].get<int>();
    const double fps = g["fps"].get<double>();
    SCOPED_TRACE(absl::StrCat(total_frames, " frames at ", fps, " fps"));
    const auto size = ingest::TargetSize(g["height"].get<int>(), g["width"].get<int>(), 70);
    ASSERT_TRUE(size.ok());
    std::vector<ingest::Segment> segments(32);
    for (int i = 0; i < 32; ++i) {
      const int index = static_cast<int>(std::floor(i * (static_cast<double>(total_frames) / 32)));
      ingest::VideoFrame frame;
      frame.pts_us = std::llround(index / fps * 1e6);
      frame.grid_rows = size->first / ingest::kPatchSide;
      frame.grid_cols = size->second / ingest::kPatchSide;
      frame.patches.resize(static_cast<size_t>(frame.num_patches()) * ingest::kPatchDim);
      segments[i].index = i;
      segments[i].frame = std::move(frame);
    }
    const int64_t samples = g["audio"].get<int64_t>();
    segments[0].audio.num_frames = static_cast<int>((samples + 639) / 640);
    segments[0].audio.samples.resize(static_cast<size_t>(segments[0].audio.num_frames) * 640);

    MediaPromptOptions options;
    options.layout = Layout::kReference;
    options.reference_audio = samples > 0;
    options.enable_thinking = g["thinking"].get<bool>();
    options.system_prompt = g["system"].get<std::string>();
    const auto [ids, types] = Assemble(options, segments, "What happens?");
    // The processor was called on the rendered text with the Gemma 3 tokenizer's post-processor,
    // which prepends a second <bos>; apply_chat_template(tokenize=True) does not.
    std::vector<int32_t> expected = g["input_ids"].get<std::vector<int32_t>>();
    std::vector<int> expected_types = g["mm_token_type_ids"].get<std::vector<int>>();
    ASSERT_GE(expected.size(), 2u);
    ASSERT_EQ(expected[0], info_.bos_id);
    ASSERT_EQ(expected[1], info_.bos_id);
    expected.erase(expected.begin());
    expected_types.erase(expected_types.begin());
    EXPECT_EQ(ids, expected);
    EXPECT_EQ(types, expected_types);
  }
}

// The interleaved split equals tokenizing the whole prompt text with the stream written out.
TEST_F(PromptTest, InterleavedSplitEqualsWholePromptTokenization) {
  const auto segments = testing::MakeFakeSegments({2500000, 1.0, 2, 2, true});
  for (const bool thinking : {false, true}) {
    for (const std::string system : {"", "You watch videos."}) {
      MediaPromptOptions options;
      options.enable_thinking = thinking;
      options.system_prompt = system;
      const std::string question = "  What is said at 00:01?  ";
      std::string expanded;
      for (const ingest::Segment& seg : segments) {
        absl::StrAppend(&expanded, seg.index > 0 ? " " : "", FormatTimestamp(seg.start_us), " <|image>");
        for (int i = 0; i < 4; ++i) expanded += "<|video|>";
        expanded += "<image|><|audio>";
        for (int i = 0; i < seg.audio.num_frames; ++i) expanded += "<|audio|>";
        expanded += "<audio|>";
      }
      ChatOptions chat;
      chat.enable_thinking = thinking;
      std::string text = *RenderChat(MediaConversation(options, question), chat);
      text.replace(text.find("<|video|>"), 9, expanded);
      EXPECT_EQ(Assemble(options, segments, question).first, tokenizer_->Encode(text));
    }
  }
}

TEST_F(PromptTest, SuffixEndsWithTheGenerationPrompt) {
  MediaPromptOptions options;
  const std::vector<int32_t> off = *QuestionSuffixIds(*tokenizer_, options, "Why?");
  options.enable_thinking = true;
  const std::vector<int32_t> on = *QuestionSuffixIds(*tokenizer_, options, "Why?");
  EXPECT_EQ(tokenizer_->Decode(off), "\n\nWhy?<turn|>\n<|turn>model\n<|channel>thought\n<channel|>");
  EXPECT_EQ(tokenizer_->Decode(on), "\n\nWhy?<turn|>\n<|turn>model\n");
  EXPECT_EQ(tokenizer_->Decode(*MediaPrefixIds(*tokenizer_, options)), "<bos><|turn>system\n<|think|><turn|>\n<|turn>user\n\n\n");
}

TEST_F(PromptTest, TextPromptIsTheTokenizedTemplate) {
  const std::vector<ChatMessage> messages = {ChatMessage::Text("user", "Hi there")};
  EXPECT_EQ(*TextPromptIds(*tokenizer_, messages, ChatOptions()),
            tokenizer_->Encode("<bos><|turn>user\nHi there<turn|>\n<|turn>model\n<|channel>thought\n<channel|>"));
}

}  // namespace
}  // namespace avserve::pipeline
