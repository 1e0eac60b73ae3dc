// TEST DOUBLE, not the product: an InferenceBackend with the timing and memory behaviour of a model
// but no model. It counts tokens like the interleaved layout, "prefills" by sleeping per token while
// polling the cancel flag, holds real memory per prefilled token (so cancellation and the prefix
// cache can be checked against the process's memory), keeps prefixes in the real PrefixCache, and
// answers with deterministic text that names the question and the media window.
// Knobs come from the environment so the out-of-process test server can be tuned per test:
//   AVSERVE_FAKE_PREFILL_US_PER_TOKEN (default 20), AVSERVE_FAKE_DECODE_MS_PER_TOKEN (default 2),
//   AVSERVE_FAKE_BYTES_PER_TOKEN (default 4096), AVSERVE_FAKE_MAX_CONTEXT (default 262144).
#pragma once

#include <memory>

#include "service/inference_backend.h"
#include "service/prefix_cache.h"

namespace avserve::service::testing {

struct FakeBackendOptions {
  int64_t prefill_us_per_token = 20;
  int64_t decode_ms_per_token = 2;
  int64_t bytes_per_token = 4096;
  int64_t max_context = 262144;
  int64_t prefix_cache_bytes = int64_t{1} << 30;
  static FakeBackendOptions FromEnvironment();
};

class FakeBackend final : public InferenceBackend {
 public:
  explicit FakeBackend(FakeBackendOptions options);
  std::string name() const override { return "fake"; }
  int64_t max_context_tokens() const override { return options_.max_context; }
  absl::StatusOr<int64_t> CountMediaTokens(const MediaRef& media, const IngestSpec& ingest) override;
  absl::StatusOr<AskOutcome> Ask(const AskSpec& spec, AskObserver& observer, const std::atomic<bool>& cancel) override;
  absl::StatusOr<QuestionOutcome> Complete(const std::string& prompt, const SamplingSpec& sampling,
                                           AskObserver& observer, const std::atomic<bool>& cancel) override;
  BackendStats stats() const override;

  int64_t asks() const { return asks_; }

 private:
  absl::StatusOr<QuestionOutcome> Answer(int question_index, const std::string& text, const SamplingSpec& sampling,
                                         AskObserver& observer, const std::atomic<bool>& cancel);

  FakeBackendOptions options_;
  PrefixCache cache_;
  int64_t asks_ = 0;
};

}  // namespace avserve::service::testing
