// The questions of one Ask request that decode together (one batched model step per token, model_backend.cc):
// forks of the media prefix, each prefilled with its question. Memory decides how many fit: a question whose
// fork cannot be made, or whose prefill runs out of memory (a long question grows its fork's sliding rings,
// engine Note [Fork rings]), starts the next group instead of failing the request.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/api.h"

namespace avserve::service {

struct QuestionGroup {
  std::vector<std::unique_ptr<engine::Sequence>> forks;  // question first + i in forks[i], prefilled
  std::vector<int64_t> suffix_tokens;                    // tokens each question added to its fork
};

using ForkFn = std::function<absl::StatusOr<std::unique_ptr<engine::Sequence>>()>;
// The ids a question appends to a fork of the prefix (chat turn, question text, generation prompt).
using SuffixFn = std::function<absl::StatusOr<std::vector<int32_t>>(size_t question)>;
// Called after question `question` is prefilled with `tokens` tokens.
using PrefilledFn = std::function<void(size_t question, int64_t tokens)>;

// Forks and prefills questions first, first + 1, ... (at most max_size of them, none past `end`). Memory running
// out (RESOURCE_EXHAUSTED from the fork or from the prefill) ends the group before that question, unless it is the
// group's first: then, as with any other error, the error is returned.
absl::StatusOr<QuestionGroup> FormQuestionGroup(size_t first, size_t end, size_t max_size, const ForkFn& fork,
                                                const SuffixFn& suffix, const std::atomic<bool>& cancel,
                                                const PrefilledFn& on_prefilled);

}  // namespace avserve::service
