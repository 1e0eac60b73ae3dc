#include "service/batch_service.h"

#include <mutex>

#include "engine/base/status_macros.h"
#include "service/batch_manager.h"
#include "service/request_parsing.h"
#include "service/status_conversion.h"

namespace avserve::service {
namespace {

using Clock = std::chrono::steady_clock;

v1::JobState ToProto(BatchJobStatus s) {
  switch (s) {
    case BatchJobStatus::kQueued: return v1::JOB_STATE_QUEUED;
    case BatchJobStatus::kRunning: return v1::JOB_STATE_RUNNING;
    case BatchJobStatus::kSucceeded: return v1::JOB_STATE_SUCCEEDED;
    case BatchJobStatus::kCancelled: return v1::JOB_STATE_CANCELLED;
  }
  return v1::JOB_STATE_UNSPECIFIED;
}

void ToProto(const std::string& job_id, const BatchItemResult& r, v1::BatchResult* out) {
  out->set_job_id(job_id);
  out->set_item_index(r.item_index);
  out->set_media_id(r.media_id);
  out->set_question_index(r.question_index);
  out->set_answer(r.answer);
  out->set_status_code(r.status_code);
  out->set_error_message(r.error_message);
  out->mutable_usage()->set_prefix_tokens(r.prefix_tokens);
  out->mutable_usage()->set_suffix_tokens(r.suffix_tokens);
  out->mutable_usage()->set_completion_tokens(r.completion_tokens);
  out->set_prefix_cache_hit(r.prefix_cache_hit);
}

void ToProto(const BatchJobSnapshot& s, v1::BatchJob* out) {
  out->set_job_id(s.spec.job_id);
  out->set_state(ToProto(s.status));
  out->set_total_items(s.spec.total_items());
  out->set_finished_items(s.finished_items);
  out->set_failed_items(s.failed_items);
  out->set_label(s.spec.label);
  out->set_created_unix_ms(s.spec.created_unix_ms);
  for (const auto& r : s.results) ToProto(s.spec.job_id, r, out->add_results());
}

absl::StatusOr<BatchJobSpec> ParseSubmit(const v1::SubmitBatchRequest& request) {
  BatchJobSpec spec;
  ASSIGN_OR_RETURN(spec.ingest, ParseIngestOptions(request.ingest()));
  ASSIGN_OR_RETURN(spec.sampling, ParseSamplingOptions(request.sampling()));
  ASSIGN_OR_RETURN(spec.questions, ParseQuestions(request.questions()));
  spec.media_ids.assign(request.media_ids().begin(), request.media_ids().end());
  if (request.label().size() > 1024) return absl::InvalidArgumentError("label is longer than 1024 bytes");
  spec.label = request.label();
  return spec;
}

// Streams a job's results: what is on disk first, then each new one; finishes when the job is done.
class WatchReactor final : public grpc::ServerWriteReactor<v1::BatchResult> {
 public:
  WatchReactor(const ServiceEnv& env, grpc::CallbackServerContext* context, std::string job_id)
      : env_(env), job_id_(std::move(job_id)) {
    absl::Status status = CheckAuth(*context, env_.bearer_token);
    if (status.ok()) status = env_.batches->Get(job_id_, false).status();
    if (!status.ok()) {
      Complete(status);
      return;
    }
    listener_ = env_.batches->AddListener([this] { Pump(); });
    Pump();
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
    }
    if (!ok) return Complete(absl::CancelledError("client went away"));
    Pump();
  }
  void OnCancel() override { Complete(absl::CancelledError("watch cancelled")); }
  void OnDone() override {
    if (listener_ >= 0) env_.batches->RemoveListener(listener_);  // waits out a running notification
    delete this;
  }

 private:
  void Pump() {
    std::unique_lock<std::mutex> lock(mu_);
    if (writing_ || finished_) return;
    std::vector<BatchItemResult> fresh;
    bool job_done = false;
    absl::Status status = env_.batches->ResultsSince(job_id_, sent_, &fresh, &job_done);
    if (!status.ok() || (fresh.empty() && job_done)) {
      lock.unlock();
      return Complete(status);
    }
    if (fresh.empty()) return;
    ToProto(job_id_, fresh[0], &out_);
    ++sent_;
    writing_ = true;
    lock.unlock();
    StartWrite(&out_);
  }

  void Complete(const absl::Status& status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_) return;
      finished_ = true;
    }
    RecordRpc(env_, "WatchBatch", status, start_);
    Finish(ToGrpcStatus(status));
  }

  const ServiceEnv& env_;
  const std::string job_id_;
  const Clock::time_point start_ = Clock::now();
  int listener_ = -1;
  std::mutex mu_;
  size_t sent_ = 0;
  bool writing_ = false;
  bool finished_ = false;
  v1::BatchResult out_;
};

}  // namespace

grpc::ServerUnaryReactor* BatchServiceImpl::Submit(grpc::CallbackServerContext* context,
                                                   const v1::SubmitBatchRequest* request, v1::BatchJob* response) {
  auto start = Clock::now();
  auto* reactor = context->DefaultReactor();
  absl::Status auth = CheckAuth(*context, env_.bearer_token);
  if (!auth.ok()) {
    FinishUnary(env_, reactor, "SubmitBatch", auth, start);
    return reactor;
  }
  // Persisting the job fsyncs: off the callback thread.
  env_.io->Post([this, reactor, request, response, start] {
    auto spec = ParseSubmit(*request);
    absl::StatusOr<BatchJobSnapshot> job =
        spec.ok() ? env_.batches->Submit(*std::move(spec)) : absl::StatusOr<BatchJobSnapshot>(spec.status());
    if (job.ok()) ToProto(*job, response);
    FinishUnary(env_, reactor, "SubmitBatch", job.status(), start);
  });
  return reactor;
}

grpc::ServerUnaryReactor* BatchServiceImpl::Get(grpc::CallbackServerContext* context,
                                                const v1::GetBatchRequest* request, v1::BatchJob* response) {
  auto start = Clock::now();
  auto* reactor = context->DefaultReactor();
  absl::Status status = CheckAuth(*context, env_.bearer_token);
  if (status.ok()) {
    auto job = env_.batches->Get(request->job_id(), request->include_results());
    if (job.ok()) ToProto(*job, response);
    status = job.status();
  }
  FinishUnary(env_, reactor, "GetBatch", status, start);
  return reactor;
}

grpc::ServerUnaryReactor* BatchServiceImpl::List(grpc::CallbackServerContext* context,
                                                 const v1::ListBatchesRequest* request,
                                                 v1::ListBatchesResponse* response) {
  auto start = Clock::now();
  auto* reactor = context->DefaultReactor();
  absl::Status status = CheckAuth(*context, env_.bearer_token);
  if (status.ok()) {
    for (const auto& job : env_.batches->List()) ToProto(job, response->add_jobs());
  }
  FinishUnary(env_, reactor, "ListBatches", status, start);
  return reactor;
}

grpc::ServerUnaryReactor* BatchServiceImpl::Cancel(grpc::CallbackServerContext* context,
                                                   const v1::CancelBatchRequest* request, v1::BatchJob* response) {
  auto start = Clock::now();
  auto* reactor = context->DefaultReactor();
  absl::Status auth = CheckAuth(*context, env_.bearer_token);
  if (!auth.ok()) {
    FinishUnary(env_, reactor, "CancelBatch", auth, start);
    return reactor;
  }
  env_.io->Post([this, reactor, request, response, start] {
    auto job = env_.batches->Cancel(request->job_id());
    if (job.ok()) ToProto(*job, response);
    FinishUnary(env_, reactor, "CancelBatch", job.status(), start);
  });
  return reactor;
}

grpc::ServerWriteReactor<v1::BatchResult>* BatchServiceImpl::Watch(grpc::CallbackServerContext* context,
                                                                   const v1::WatchBatchRequest* request) {
  return new WatchReactor(env_, context, request->job_id());
}

}  // namespace avserve::service
