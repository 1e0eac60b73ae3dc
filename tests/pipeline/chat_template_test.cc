#include "pipeline/chat_template.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/pipeline/test_util.h"

namespace avserve::pipeline {
namespace {

using ::avserve::testing::Gemma4TestTokenizer;
using ::avserve::testing::ReadFile;
using ::avserve::testing::TestDataPath;
using Json = nlohmann::json;

ChatMessage FromJson(const Json& message) {
  const std::string role = message["role"].get<std::string>();
  if (message["content"].is_string()) return ChatMessage::Text(role, message["content"].get<std::string>());
  std::vector<ContentItem> items;
  for (const Json& item : message["content"]) {
    const std::string type = item["type"].get<std::string>();
    ContentItem content;
    if (type == "text") {
      content.kind = ContentKind::kText;
      content.text = item["text"].get<std::string>();
    } else {
      content.kind = type == "image" ? ContentKind::kImage : type == "video" ? ContentKind::kVideo : ContentKind::kAudio;
    }
    items.push_back(content);
  }
  return ChatMessage::Items(role, std::move(items));
}

TEST(ChatTemplateTest, MatchesTransformersApplyChatTemplate) {
  const Json convs = Json::parse(ReadFile(TestDataPath("pipeline/chat_conversations.json")))["conversations"];
  const Json goldens = Json::parse(ReadFile(TestDataPath("pipeline/chat_goldens.json")))["goldens"];
  ASSERT_EQ(convs.size(), goldens.size());
  ASSERT_GE(convs.size(), 20u);
  const engine::Tokenizer* tokenizer = Gemma4TestTokenizer();
  for (size_t i = 0; i < convs.size(); ++i) {
    std::vector<ChatMessage> messages;
    for (const Json& m : convs[i]["messages"]) messages.push_back(FromJson(m));
    ChatOptions options;
    options.enable_thinking = convs[i]["thinking"].get<bool>();
    options.add_generation_prompt = convs[i]["add_generation_prompt"].get<bool>();
    const absl::StatusOr<std::string> text = RenderChat(messages, options);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, goldens[i]["text"].get<std::string>()) << "conversation " << i;
    if (tokenizer != nullptr) {
      EXPECT_EQ(tokenizer->Encode(*text), goldens[i]["ids"].get<std::vector<int32_t>>()) << "conversation " << i;
    }
  }
}

TEST(ChatTemplateTest, TrimsLikePython) {
  EXPECT_EQ(TrimPythonWhitespace(" \t\n a b \xC2\xA0\xE3\x80\x80"), "a b");
  EXPECT_EQ(TrimPythonWhitespace("\xE2\x80\x8B" "x"), "\xE2\x80\x8B" "x");  // U+200B is not a space
  EXPECT_EQ(TrimPythonWhitespace("   "), "");
}

TEST(ChatTemplateTest, StripsThoughtsFromModelTurns) {
  EXPECT_EQ(StripThinking("<|channel>thought\nhmm<channel|>Answer"), "Answer");
  EXPECT_EQ(StripThinking("A<|channel>x<channel|>B<|channel>tail"), "AB");
  EXPECT_EQ(StripThinking("plain "), "plain");
}

TEST(ChatTemplateTest, RejectsEmptyConversations) {
  EXPECT_FALSE(RenderChat({}, ChatOptions()).ok());
  EXPECT_FALSE(RenderChat({ChatMessage::Items("system", {})}, ChatOptions()).ok());
}

}  // namespace
}  // namespace avserve::pipeline
