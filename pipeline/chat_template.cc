#include "pipeline/chat_template.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace avserve::pipeline {
namespace {

// Code points for which Python's str.isspace() is true.
bool IsPythonSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

// Decodes the code point starting at text[pos] (text is valid UTF-8 or treated bytewise);
// returns (code point, length).
std::pair<char32_t, size_t> DecodeAt(std::string_view text, size_t pos) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = b(pos);
  size_t len = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
  if (pos + len > text.size()) return {lead, 1};
  char32_t c = len == 1 ? lead : lead & (0x7F >> len);
  for (size_t i = 1; i < len; ++i) {
    if ((b(pos + i) & 0xC0) != 0x80) return {lead, 1};
    c = (c << 6) | (b(pos + i) & 0x3F);
  }
  return {c, len};
}

// Start of the code point that ends at text[end - 1].
size_t PreviousStart(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && end - start < 4 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) {
    --start;
  }
  return start;
}

constexpr std::string_view kChannelOpen = "<|channel>";
constexpr std::string_view kChannelClose = "<channel|>";

void AppendContent(const ChatMessage& message, bool model_role, std::string* out) {
  const auto text_of = [&](std::string_view text) {
    if (model_role) {
      out->append(StripThinking(text));
    } else {
      out->append(TrimPythonWhitespace(text));
    }
  };
  if (!message.has_items) {
    text_of(message.text);
    return;
  }
  for (const ContentItem& item : message.items) {
    switch (item.kind) {
      case ContentKind::kText: text_of(item.text); break;
      case ContentKind::kImage: out->append(kImageItemText); break;
      case ContentKind::kAudio: out->append(kAudioItemText); break;
      case ContentKind::kVideo: out->append(kVideoItemText); break;
    }
  }
}

}  // namespace

ChatMessage ChatMessage::Text(std::string role, std::string text) {
  ChatMessage message;
  message.role = std::move(role);
  message.text = std::move(text);
  return message;
}

ChatMessage ChatMessage::Items(std::string role, std::vector<ContentItem> items) {
  ChatMessage message;
  message.role = std::move(role);
  message.items = std::move(items);
  message.has_items = true;
  return message;
}

std::string_view TrimPythonWhitespace(std::string_view text) {
  size_t begin = 0, end = text.size();
  while (begin < end) {
    const auto [c, len] = DecodeAt(text, begin);
    if (!IsPythonSpace(c)) break;
    begin += len;
  }
  while (end > begin) {
    const size_t start = PreviousStart(text, end);
    if (!IsPythonSpace(DecodeAt(text, start).first)) break;
    end = start;
  }
  return text.substr(begin, end - begin);
}

std::string StripThinking(std::string_view text) {
  std::string result;
  // Python: for part in text.split('<channel|>'): keep what precedes any '<|channel>' in it.
  for (size_t pos = 0;;) {
    const size_t close = text.find(kChannelClose, pos);
    const std::string_view part =
        text.substr(pos, close == std::string_view::npos ? std::string_view::npos : close - pos);
    const size_t open = part.find(kChannelOpen);
    result.append(open == std::string_view::npos ? part : part.substr(0, open));
    if (close == std::string_view::npos) break;
    pos = close + kChannelClose.size();
  }
  return std::string(TrimPythonWhitespace(result));
}

absl::StatusOr<std::string> RenderChat(const std::vector<ChatMessage>& messages,
                                       const ChatOptions& options) {
  if (messages.empty()) return absl::InvalidArgumentError("a chat needs at least one message");
  std::string out = "<bos>";
  const bool leading_system = messages[0].role == "system" || messages[0].role == "developer";
  if (leading_system && messages[0].has_items) {
    return absl::InvalidArgumentError("the system message must be plain text");
  }
  if (options.enable_thinking || leading_system) {
    out += "<|turn>system\n";
    if (options.enable_thinking) out += "<|think|>";
    if (leading_system) out.append(TrimPythonWhitespace(messages[0].text));
    out += "<turn|>\n";
  }
  for (size_t i = leading_system ? 1 : 0; i < messages.size(); ++i) {
    const ChatMessage& message = messages[i];
    if (message.role.empty()) return absl::InvalidArgumentError("a message has no role");
    const bool model_role = message.role == "assistant" || message.role == "model";
    absl::StrAppend(&out, "<|turn>", model_role ? "model" : message.role, "\n");
    AppendContent(message, model_role, &out);
    out += "<turn|>\n";
  }
  if (options.add_generation_prompt) {
    out += "<|turn>model\n";
    if (!options.enable_thinking) out += "<|channel>thought\n<channel|>";
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> EncodeChat(const engine::Tokenizer& tokenizer,
                                                const std::vector<ChatMessage>& messages,
                                                const ChatOptions& options) {
  absl::StatusOr<std::string> text = RenderChat(messages, options);
  if (!text.ok()) return text.status();
  return tokenizer.Encode(*text);
}

}  // namespace avserve::pipeline
