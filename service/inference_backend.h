// What the service needs from inference, as typed values (parsed from the proto once, at the edge).
// The product implementation (model_backend.h) runs ingest -> pipeline -> engine; unit tests use a
// test double. Every method runs on the single engine thread (engine_worker.h), never on gRPC threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace avserve::service {

enum class PromptLayout { kInterleaved, kReference };

// How media becomes tokens. Part of the prefix-cache key.
struct IngestSpec {
  double fps = 1.0;
  int frame_budget = 70;
  PromptLayout layout = PromptLayout::kInterleaved;
  bool use_audio = true;
  bool use_video = true;
  int64_t start_us = 0;  // window [start_us, end_us) of media time; end_us 0 = to the end
  int64_t end_us = 0;
  std::string CacheKey() const;  // canonical text of every field
};

struct SamplingSpec {
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
  int max_new_tokens = 256;
};

struct MediaRef {
  std::string media_id;        // content hash: the cache key's media part
  std::string file_path;       // what ingest opens
  int64_t duration_us = 0;     // from the probe
  bool has_video = false, has_audio = false;
};

struct AskSpec {
  MediaRef media;
  IngestSpec ingest;
  SamplingSpec sampling;
  std::vector<std::string> questions;  // >= 1
  bool thinking = false;
};

// Progress and text as they happen. Implementations must not block (they queue for the network).
class AskObserver {
 public:
  virtual ~AskObserver() = default;
  virtual void OnIngestProgress(int64_t done_us, int64_t total_us) = 0;
  // question_index -1: the shared media prefix.
  virtual void OnPrefillProgress(int question_index, int64_t done_tokens, int64_t total_tokens) = 0;
  virtual void OnAnswerDelta(int question_index, std::string_view text) = 0;
};

struct QuestionOutcome {
  std::string answer;
  int64_t prompt_tokens = 0;       // this question's suffix
  int64_t completion_tokens = 0;
  std::string finish_reason;       // "stop" or "length"
};

struct AskOutcome {
  int64_t prefix_tokens = 0;
  bool prefix_cache_hit = false;
  int64_t ingest_ms = 0, prefill_ms = 0, decode_ms = 0;
  std::vector<QuestionOutcome> questions;  // one per AskSpec question, same order
};

struct BackendStats {
  int64_t prefix_cache_bytes = 0;
  int64_t prefix_cache_entries = 0;
  int64_t device_memory_bytes = 0;  // accelerator memory in use (0 on CPU)
};

class InferenceBackend {
 public:
  virtual ~InferenceBackend() = default;
  virtual std::string name() const = 0;
  virtual int64_t max_context_tokens() const = 0;
  // Exact number of prompt tokens the media prefix of `ingest` takes (used to plan summaries).
  virtual absl::StatusOr<int64_t> CountMediaTokens(const MediaRef& media, const IngestSpec& ingest) = 0;
  // Prefills the media prefix once (or takes it from the prefix cache), forks it per question,
  // prefills each question and generates its answer. CANCELLED as soon as `cancel` is set; all
  // memory of a cancelled request is released before returning.
  virtual absl::StatusOr<AskOutcome> Ask(const AskSpec& spec, AskObserver& observer,
                                         const std::atomic<bool>& cancel) = 0;
  // A text-only prompt (the reduce step of chunked summaries); deltas go to question_index 0.
  virtual absl::StatusOr<QuestionOutcome> Complete(const std::string& prompt, const SamplingSpec& sampling,
                                                   AskObserver& observer, const std::atomic<bool>& cancel) = 0;
  virtual BackendStats stats() const = 0;
};

}  // namespace avserve::service
