#include "service/summarizer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"

namespace avserve::service {
namespace {

std::string Clock(int64_t us) {
  int64_t s = us / 1000000;
  return absl::StrFormat("%02d:%02d", s / 60, s % 60);
}

std::string SummaryQuestion(const std::string& instructions) {
  std::string q =
      "Summarize this recording. Cover what is shown and what is said, in order, and start each point "
      "with its MM:SS timestamp.";
  if (!instructions.empty()) absl::StrAppend(&q, " ", instructions);
  return q;
}

// Map steps report progress but keep their notes to themselves: only the reduce step's text streams.
class MapObserver : public AskObserver {
 public:
  explicit MapObserver(AskObserver& outer) : outer_(outer) {}
  void OnIngestProgress(int64_t done_us, int64_t total_us) override { outer_.OnIngestProgress(done_us, total_us); }
  void OnPrefillProgress(int q, int64_t done, int64_t total) override { outer_.OnPrefillProgress(q, done, total); }
  void OnAnswerDelta(int, std::string_view) override {}

 private:
  AskObserver& outer_;
};

void AddTotals(const AskOutcome& part, AskOutcome* total) {
  total->prefix_tokens += part.prefix_tokens;
  total->ingest_ms += part.ingest_ms;
  total->prefill_ms += part.prefill_ms;
  total->decode_ms += part.decode_ms;
}

}  // namespace

int64_t PlanChunkUs(int64_t duration_us, int64_t total_tokens, int64_t budget_tokens) {
  if (total_tokens <= budget_tokens || duration_us <= 0) return duration_us;
  int64_t num_chunks = (total_tokens + budget_tokens - 1) / budget_tokens;
  // Whole seconds, rounded down so that no chunk exceeds its share; at least one second.
  int64_t chunk_s = std::max<int64_t>(1, duration_us / num_chunks / 1000000);
  return chunk_s * 1000000;
}

absl::StatusOr<SummarizeOutcome> Summarize(InferenceBackend& backend, const SummarizeSpec& spec,
                                           SummarizeObserver& observer, const std::atomic<bool>& cancel) {
  const int64_t start = spec.ingest.start_us;
  const int64_t end = spec.ingest.end_us > 0 ? std::min(spec.ingest.end_us, spec.media.duration_us)
                                             : spec.media.duration_us;
  ASSIGN_OR_RETURN(int64_t total_tokens, backend.CountMediaTokens(spec.media, spec.ingest));
  const int64_t budget = backend.max_context_tokens() - kSummaryPromptReserve - spec.sampling.max_new_tokens;
  if (budget <= 0) return absl::InvalidArgumentError("max_new_tokens leaves no room for media in the context");
  int64_t chunk_us = spec.chunk_us > 0 ? spec.chunk_us : PlanChunkUs(end - start, total_tokens, budget);
  AskSpec ask{spec.media, spec.ingest, spec.sampling, {SummaryQuestion(spec.instructions)}, spec.thinking};
  if (chunk_us >= end - start) {  // fits: one pass, streamed directly
    ASSIGN_OR_RETURN(AskOutcome outcome, backend.Ask(ask, observer, cancel));
    return SummarizeOutcome{std::move(outcome), 1};
  }
  const int num_chunks = static_cast<int>((end - start + chunk_us - 1) / chunk_us);
  SummarizeOutcome result;
  result.num_chunks = num_chunks;
  std::string notes;
  MapObserver map_observer(observer);
  for (int i = 0; i < num_chunks; ++i) {
    AskSpec part = ask;
    part.ingest.start_us = start + i * chunk_us;
    part.ingest.end_us = std::min(end, part.ingest.start_us + chunk_us);
    part.questions = {absl::StrCat("This is the part from ", Clock(part.ingest.start_us), " to ",
                                   Clock(part.ingest.end_us),
                                   " of a longer recording. Write short notes of what is shown and said, "
                                   "each starting with its MM:SS timestamp.")};
    observer.OnChunk(i, num_chunks, part.ingest.start_us, part.ingest.end_us, /*done=*/false);
    ASSIGN_OR_RETURN(AskOutcome piece, backend.Ask(part, map_observer, cancel));
    AddTotals(piece, &result.outcome);
    for (const auto& q : piece.questions) {
      result.outcome.questions.resize(1);
      result.outcome.questions[0].prompt_tokens += q.prompt_tokens;
      result.outcome.questions[0].completion_tokens += q.completion_tokens;
      absl::StrAppend(&notes, "[", Clock(part.ingest.start_us), "-", Clock(part.ingest.end_us), "]\n", q.answer, "\n");
    }
    observer.OnChunk(i, num_chunks, part.ingest.start_us, part.ingest.end_us, /*done=*/true);
  }
  std::string prompt = absl::StrCat("Here are timestamped notes on consecutive parts of one recording:\n\n", notes,
                                    "\n", SummaryQuestion(spec.instructions));
  ASSIGN_OR_RETURN(QuestionOutcome summary, backend.Complete(prompt, spec.sampling, observer, cancel));
  summary.prompt_tokens += result.outcome.questions.empty() ? 0 : result.outcome.questions[0].prompt_tokens;
  summary.completion_tokens += result.outcome.questions.empty() ? 0 : result.outcome.questions[0].completion_tokens;
  result.outcome.questions = {std::move(summary)};
  return result;
}

}  // namespace avserve::service
