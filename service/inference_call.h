// One Ask or Summarize call: the gRPC write reactor, the engine task and the progress observer.
// Lifetime (Note [Call lifetime]): shared by gRPC (until OnDone) and the engine (while queued or
// running); after OnDone nothing touches the reactor API, so late events from the engine are dropped.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>

#include "avserve/v1/avserve.grpc.pb.h"
#include "service/engine_worker.h"
#include "service/service_env.h"
#include "service/summarizer.h"

namespace avserve::service {

class InferenceCall final : public grpc::ServerWriteReactor<v1::AskEvent>,
                            public EngineTask,
                            public SummarizeObserver,
                            public std::enable_shared_from_this<InferenceCall> {
 public:
  enum class Kind { kAsk, kSummarize };

  // Validates, then queues the call (or finishes it at once with the error).
  static InferenceCall* StartAsk(const ServiceEnv& env, grpc::CallbackServerContext* context,
                                 const v1::AskRequest& request);
  static InferenceCall* StartSummarize(const ServiceEnv& env, grpc::CallbackServerContext* context,
                                       const v1::SummarizeRequest& request);

  // EngineTask (engine thread / shutdown).
  void Run(InferenceBackend& backend) override;
  void Abandon(const absl::Status& why) override { Complete(why); }

  // SummarizeObserver (engine thread).
  void OnIngestProgress(int64_t done_us, int64_t total_us) override;
  void OnPrefillProgress(int question_index, int64_t done_tokens, int64_t total_tokens) override;
  void OnAnswerDelta(int question_index, std::string_view text) override;
  void OnChunk(int chunk_index, int num_chunks, int64_t start_us, int64_t end_us, bool done) override;

  // ServerWriteReactor (gRPC threads).
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  InferenceCall(const ServiceEnv& env, Kind kind, grpc::CallbackServerContext* context);
  static InferenceCall* Launch(std::shared_ptr<InferenceCall> call, absl::Status status);

  void Push(v1::AskEvent event);
  void Complete(const absl::Status& status);
  void MaybeWrite();
  void RecordOutcome(const AskOutcome& outcome);
  v1::AskEvent FinalEvent(const AskOutcome& outcome, int num_chunks) const;

  const ServiceEnv& env_;
  const Kind kind_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::system_clock::time_point deadline_;
  std::atomic<bool> cancel_{false};
  AskSpec ask_;             // kAsk
  SummarizeSpec summarize_; // kSummarize

  std::mutex mu_;           // guards everything below
  std::shared_ptr<InferenceCall> self_;  // gRPC's reference, dropped in OnDone
  std::deque<v1::AskEvent> pending_;
  v1::AskEvent in_flight_;
  bool writing_ = false;
  std::optional<absl::Status> final_status_;
  bool finish_called_ = false;
  bool done_ = false;
  int64_t last_ingest_event_us_ = -1;
};

}  // namespace avserve::service
