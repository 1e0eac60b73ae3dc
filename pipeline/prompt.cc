#include "pipeline/prompt.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"

namespace avserve::pipeline {
namespace {

// The rendered conversation cut at the video placeholder: (text before, text after).
absl::StatusOr<std::pair<std::string, std::string>> SplitAtVideo(const MediaPromptOptions& options,
                                                                  std::string_view question) {
  ChatOptions chat;
  chat.enable_thinking = options.enable_thinking;
  ASSIGN_OR_RETURN(const std::string text, RenderChat(MediaConversation(options, question), chat));
  // Search after the system turn, whose text may mention the placeholder itself.
  size_t from = 0;
  if (!options.system_prompt.empty() || options.enable_thinking) {
    from = text.find("<turn|>\n");
    if (from == std::string::npos) return absl::InternalError("system turn not rendered");
  }
  const std::string_view placeholder = "<|video|>";
  const size_t at = text.find(placeholder, from);
  if (at == std::string::npos) return absl::InternalError("video placeholder not rendered");
  return std::make_pair(text.substr(0, at), text.substr(at + placeholder.size()));
}

}  // namespace

std::vector<ChatMessage> MediaConversation(const MediaPromptOptions& options, std::string_view question) {
  std::vector<ChatMessage> messages;
  if (!options.system_prompt.empty()) messages.push_back(ChatMessage::Text("system", options.system_prompt));
  std::vector<ContentItem> items = {{ContentKind::kVideo, ""}};
  if (options.layout == Layout::kReference && options.reference_audio) {
    items.push_back({ContentKind::kAudio, ""});
  }
  items.push_back({ContentKind::kText, std::string(question)});
  messages.push_back(ChatMessage::Items("user", std::move(items)));
  return messages;
}

absl::StatusOr<std::vector<int32_t>> MediaPrefixIds(const engine::Tokenizer& tokenizer,
                                                    const MediaPromptOptions& options) {
  ASSIGN_OR_RETURN(const auto parts, SplitAtVideo(options, ""));
  return tokenizer.Encode(parts.first);
}

absl::StatusOr<std::vector<int32_t>> QuestionSuffixIds(const engine::Tokenizer& tokenizer,
                                                       const MediaPromptOptions& options,
                                                       std::string_view question) {
  ASSIGN_OR_RETURN(auto parts, SplitAtVideo(options, question));
  std::string_view after = parts.second;
  if (options.layout == Layout::kReference && options.reference_audio) {
    // "\n\n" and the audio block belong to the stream (Interleaver::Finish).
    const std::string_view lead = "\n\n<|audio|>";
    if (after.substr(0, lead.size()) != lead) return absl::InternalError("audio item not rendered");
    after.remove_prefix(lead.size());
  }
  return tokenizer.Encode(after);
}

absl::StatusOr<std::vector<int32_t>> TextPromptIds(const engine::Tokenizer& tokenizer,
                                                   const std::vector<ChatMessage>& messages,
                                                   const ChatOptions& options) {
  return EncodeChat(tokenizer, messages, options);
}

}  // namespace avserve::pipeline
