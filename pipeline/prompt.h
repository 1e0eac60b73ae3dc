// Prompt assembly for the service: a [system], user [video, (audio), question] conversation split
// around the media stream so that the media can be prefilled once and forked per question:
//   MediaPrefixIds + (Interleaver chunks) + QuestionSuffixIds(q)
// equals the tokenized chat template text after transformers' processor expansion (tested against
// RenderChat + the expansion, and against the device goldens for the reference layout).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/tokenizer.h"
#include "pipeline/chat_template.h"
#include "pipeline/interleaver.h"

namespace avserve::pipeline {

struct MediaPromptOptions {
  std::string system_prompt;  // empty: no system turn (unless thinking is on)
  bool enable_thinking = false;
  Layout layout = Layout::kInterleaved;
  // Reference layout only: the media has a soundtrack, so the conversation holds an audio item
  // right after the video item and the stream ends with "\n\n" + the audio block.
  bool reference_audio = false;
};

// The conversation the split reproduces (video item, then the audio item in the reference layout
// with audio, then the question).
std::vector<ChatMessage> MediaConversation(const MediaPromptOptions& options, std::string_view question);

// Ids before the media: "<bos>[<|turn>system\n[<|think|>]...<turn|>\n]<|turn>user\n\n\n".
// Depends on the system prompt and thinking only, so a prefix cache keys on those too.
absl::StatusOr<std::vector<int32_t>> MediaPrefixIds(const engine::Tokenizer& tokenizer,
                                                    const MediaPromptOptions& options);

// Ids after the media for one question, through the generation prompt ("<|turn>model\n" and, with
// thinking off, the empty thought "<|channel>thought\n<channel|>").
absl::StatusOr<std::vector<int32_t>> QuestionSuffixIds(const engine::Tokenizer& tokenizer,
                                                       const MediaPromptOptions& options,
                                                       std::string_view question);

// A text-only prompt (no media): the chat template, tokenized.
absl::StatusOr<std::vector<int32_t>> TextPromptIds(const engine::Tokenizer& tokenizer,
                                                   const std::vector<ChatMessage>& messages,
                                                   const ChatOptions& options);

}  // namespace avserve::pipeline
