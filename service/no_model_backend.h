// The backend of a server started without a model (--checkpoint unset) or built without the engine:
// media management and batch bookkeeping work, inference answers FAILED_PRECONDITION with the reason.
#pragma once

#include <string>

#include "service/inference_backend.h"

namespace avserve::service {

class NoModelBackend final : public InferenceBackend {
 public:
  explicit NoModelBackend(std::string reason) : reason_(std::move(reason)) {}
  std::string name() const override { return "none"; }
  int64_t max_context_tokens() const override { return 0; }
  absl::StatusOr<int64_t> CountMediaTokens(const MediaRef&, const IngestSpec&) override { return Error(); }
  absl::StatusOr<AskOutcome> Ask(const AskSpec&, AskObserver&, const std::atomic<bool>&) override { return Error(); }
  absl::StatusOr<QuestionOutcome> Complete(const std::string&, const SamplingSpec&, AskObserver&,
                                           const std::atomic<bool>&) override {
    return Error();
  }
  BackendStats stats() const override { return {}; }

 private:
  absl::Status Error() const { return absl::FailedPreconditionError(reason_); }
  std::string reason_;
};

}  // namespace avserve::service
