// Summaries of long recordings (design.md §2): when the media prefix does not fit the context,
// map (timestamped notes per time chunk) then reduce (one summary from the notes). Runs on the engine
// thread against any InferenceBackend.
//
// Note [Chunk timestamps]: a chunk is ingested as a window [start_us, end_us); its segments are
// renumbered from 0 (the Interleaver wants indices in order from 0) but keep their media start
// times, which is what the "MM:SS" marks are written from, so the model sees recording times in
// every chunk. The notes are also labelled "[MM:SS-MM:SS]" with the chunk's range for the reduce step.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "service/inference_backend.h"

namespace avserve::service {

class SummarizeObserver : public AskObserver {
 public:
  virtual void OnChunk(int chunk_index, int num_chunks, int64_t start_us, int64_t end_us, bool done) = 0;
};

struct SummarizeSpec {
  MediaRef media;
  IngestSpec ingest;
  SamplingSpec sampling;
  std::string instructions;
  int64_t chunk_us = 0;  // 0: the longest chunk that fits the context
  bool thinking = false;
};

struct SummarizeOutcome {
  AskOutcome outcome;    // totals over all chunks; questions[0] is the summary
  int num_chunks = 1;
};

// Tokens kept free of media in each map prompt: question, template and the notes generated.
inline constexpr int64_t kSummaryPromptReserve = 512;

absl::StatusOr<SummarizeOutcome> Summarize(InferenceBackend& backend, const SummarizeSpec& spec,
                                           SummarizeObserver& observer, const std::atomic<bool>& cancel);

// How many equal chunks of whole seconds cover `duration_us` when each may hold `budget_tokens` of
// the `total_tokens` the whole media takes (pure arithmetic, exposed for tests). Returns chunk_us.
int64_t PlanChunkUs(int64_t duration_us, int64_t total_tokens, int64_t budget_tokens);

}  // namespace avserve::service
