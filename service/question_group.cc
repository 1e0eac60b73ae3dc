#include "service/question_group.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"

namespace avserve::service {

absl::StatusOr<QuestionGroup> FormQuestionGroup(size_t first, size_t end, size_t max_size, const ForkFn& fork,
                                                const SuffixFn& suffix, const std::atomic<bool>& cancel,
                                                const PrefilledFn& on_prefilled) {
  QuestionGroup group;
  end = std::min(end, first + max_size);
  for (size_t q = first; q < end; ++q) {
    const bool can_stop = !group.forks.empty();  // a later question can wait for the next group
    absl::StatusOr<std::unique_ptr<engine::Sequence>> seq = fork();
    if (!seq.ok() && absl::IsResourceExhausted(seq.status()) && can_stop) break;
    if (!seq.ok()) return seq.status();
    absl::StatusOr<std::vector<int32_t>> ids = suffix(q);
    if (!ids.ok()) return ids.status();
    const engine::PromptChunk chunk = engine::TextChunk(*std::move(ids));
    const absl::Status prefilled = (*seq)->Prefill(chunk, &cancel);
    if (absl::IsResourceExhausted(prefilled) && can_stop) break;
    if (!prefilled.ok()) return prefilled;
    const auto tokens = static_cast<int64_t>(chunk.ids.size());
    if (on_prefilled) on_prefilled(q, tokens);
    group.suffix_tokens.push_back(tokens);
    group.forks.push_back(*std::move(seq));
  }
  return group;
}

}  // namespace avserve::service
