// The Gemma 4 chat format (spec §6; the published template is llama.cpp's
// models/templates/gemma4.jinja), written out in C++ rather than run through a Jinja engine.
// Covered: system/developer turn, thinking on/off, multi-turn history (thoughts stripped from model
// turns), content items text/image/video/audio, the generation prompt. Tool declarations, calls and
// responses are not supported (the service offers no tools). Byte-identical to transformers'
// apply_chat_template with that template: tests/pipeline/chat_template_test.cc (device goldens).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/tokenizer.h"

namespace avserve::pipeline {

enum class ContentKind { kText, kImage, kVideo, kAudio };

struct ContentItem {
  ContentKind kind = ContentKind::kText;
  std::string text;  // kText only
};

struct ChatMessage {
  std::string role;  // "system", "developer", "user", "assistant" (rendered "model"), ...
  // Either a plain string (`items` empty, `text` used) or a list of content items.
  std::string text;
  std::vector<ContentItem> items;
  bool has_items = false;

  static ChatMessage Text(std::string role, std::string text);
  static ChatMessage Items(std::string role, std::vector<ContentItem> items);
};

struct ChatOptions {
  bool enable_thinking = false;
  bool add_generation_prompt = true;
};

// Placeholder texts the template writes for media items (the processor expands them).
inline constexpr std::string_view kImageItemText = "\n\n<|image|>\n\n";
inline constexpr std::string_view kVideoItemText = "\n\n<|video|>\n\n";
inline constexpr std::string_view kAudioItemText = "<|audio|>";

// The prompt text, exactly as the template renders it (starting with "<bos>").
absl::StatusOr<std::string> RenderChat(const std::vector<ChatMessage>& messages,
                                       const ChatOptions& options);

// RenderChat, then tokenized (special tokens in the text become their ids).
absl::StatusOr<std::vector<int32_t>> EncodeChat(const engine::Tokenizer& tokenizer,
                                                const std::vector<ChatMessage>& messages,
                                                const ChatOptions& options);

// Python's str.strip() (what Jinja's `trim` filter does): Unicode whitespace at both ends.
std::string_view TrimPythonWhitespace(std::string_view text);
// The template's strip_thinking: drops every "<|channel>...<channel|>" thought, then trims.
std::string StripThinking(std::string_view text);

}  // namespace avserve::pipeline
