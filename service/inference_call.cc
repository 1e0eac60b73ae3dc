#include "service/inference_call.h"

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "service/request_parsing.h"
#include "service/status_conversion.h"

namespace avserve::service {
namespace {

absl::StatusOr<MediaRecord> LookUpMedia(const ServiceEnv& env, const std::string& media_id,
                                        const IngestSpec& ingest) {
  if (media_id.empty()) return absl::InvalidArgumentError("media_id is required");
  ASSIGN_OR_RETURN(MediaRecord record, env.media->Get(media_id));
  RETURN_IF_ERROR(CheckWindow(ingest, record));
  return record;
}

absl::Status ParseAsk(const ServiceEnv& env, const v1::AskRequest& request, AskSpec* spec) {
  ASSIGN_OR_RETURN(spec->ingest, ParseIngestOptions(request.ingest()));
  ASSIGN_OR_RETURN(spec->sampling, ParseSamplingOptions(request.sampling()));
  ASSIGN_OR_RETURN(spec->questions, ParseQuestions(request.questions()));
  ASSIGN_OR_RETURN(MediaRecord record, LookUpMedia(env, request.media_id(), spec->ingest));
  spec->media = ToMediaRef(record);
  spec->thinking = request.thinking();
  return absl::OkStatus();
}

absl::Status ParseSummarize(const ServiceEnv& env, const v1::SummarizeRequest& request, SummarizeSpec* spec) {
  ASSIGN_OR_RETURN(spec->ingest, ParseIngestOptions(request.ingest()));
  ASSIGN_OR_RETURN(spec->sampling, ParseSamplingOptions(request.sampling()));
  if (request.instructions().size() > kMaxQuestionBytes) {
    return absl::InvalidArgumentError("instructions are too long");
  }
  if (request.chunk_us() < 0 || (request.chunk_us() > 0 && request.chunk_us() < 1000000)) {
    return absl::InvalidArgumentError("chunk_us must be 0 (automatic) or at least 1 s");
  }
  ASSIGN_OR_RETURN(MediaRecord record, LookUpMedia(env, request.media_id(), spec->ingest));
  spec->media = ToMediaRef(record);
  spec->instructions = request.instructions();
  spec->chunk_us = request.chunk_us();
  return absl::OkStatus();
}

int64_t MsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

InferenceCall::InferenceCall(const ServiceEnv& env, Kind kind, grpc::CallbackServerContext* context)
    : env_(env), kind_(kind), deadline_(context->deadline()) {}

InferenceCall* InferenceCall::StartAsk(const ServiceEnv& env, grpc::CallbackServerContext* context,
                                       const v1::AskRequest& request) {
  std::shared_ptr<InferenceCall> call(new InferenceCall(env, Kind::kAsk, context));
  absl::Status status = CheckAuth(*context, env.bearer_token);
  if (status.ok()) status = ParseAsk(env, request, &call->ask_);
  return Launch(std::move(call), status);
}

InferenceCall* InferenceCall::StartSummarize(const ServiceEnv& env, grpc::CallbackServerContext* context,
                                             const v1::SummarizeRequest& request) {
  std::shared_ptr<InferenceCall> call(new InferenceCall(env, Kind::kSummarize, context));
  absl::Status status = CheckAuth(*context, env.bearer_token);
  if (status.ok()) status = ParseSummarize(env, request, &call->summarize_);
  return Launch(std::move(call), status);
}

InferenceCall* InferenceCall::Launch(std::shared_ptr<InferenceCall> call, absl::Status status) {
  call->self_ = call;
  if (status.ok()) status = call->env_.engine->Submit(call);
  if (!status.ok()) call->Complete(status);
  return call.get();
}

void InferenceCall::Run(InferenceBackend& backend) {
  if (cancel_.load()) return Complete(absl::CancelledError("cancelled while queued"));
  if (std::chrono::system_clock::now() >= deadline_) {
    return Complete(absl::DeadlineExceededError("deadline passed while queued"));
  }
  const int64_t queue_ms = MsSince(start_);
  absl::StatusOr<AskOutcome> outcome;
  int num_chunks = 1;
  if (kind_ == Kind::kAsk) {
    outcome = backend.Ask(ask_, *this, cancel_);
  } else {
    auto summary = Summarize(backend, summarize_, *this, cancel_);
    if (summary.ok()) {
      num_chunks = summary->num_chunks;
      outcome = std::move(summary->outcome);
    } else {
      outcome = summary.status();
    }
  }
  if (!outcome.ok()) return Complete(outcome.status());
  RecordOutcome(*outcome);
  v1::AskEvent final = FinalEvent(*outcome, num_chunks);
  final.mutable_final()->mutable_timings()->set_queue_ms(queue_ms);
  Push(std::move(final));
  Complete(absl::OkStatus());
}

void InferenceCall::RecordOutcome(const AskOutcome& outcome) {
  int64_t prompt = outcome.prefix_cache_hit ? 0 : outcome.prefix_tokens;
  int64_t completion = 0;
  for (const auto& q : outcome.questions) {
    prompt += q.prompt_tokens;
    completion += q.completion_tokens;
  }
  env_.metrics->RecordPrefixCache(outcome.prefix_cache_hit);
  env_.metrics->RecordPrefill(prompt, outcome.prefill_ms / 1000.0);
  env_.metrics->RecordDecode(completion, outcome.decode_ms / 1000.0);
}

v1::AskEvent InferenceCall::FinalEvent(const AskOutcome& outcome, int num_chunks) const {
  v1::AskEvent event;
  v1::FinalEvent* final = event.mutable_final();
  final->set_prefix_cache_hit(outcome.prefix_cache_hit);
  final->set_num_chunks(num_chunks);
  int64_t suffix = 0, completion = 0;
  for (size_t i = 0; i < outcome.questions.size(); ++i) {
    const QuestionOutcome& q = outcome.questions[i];
    v1::QuestionResult* r = final->add_results();
    r->set_question_index(static_cast<int32_t>(i));
    r->set_answer(q.answer);
    r->set_completion_tokens(q.completion_tokens);
    r->set_finish_reason(q.finish_reason);
    suffix += q.prompt_tokens;
    completion += q.completion_tokens;
  }
  final->mutable_usage()->set_prefix_tokens(outcome.prefix_tokens);
  final->mutable_usage()->set_suffix_tokens(suffix);
  final->mutable_usage()->set_completion_tokens(completion);
  v1::Timings* t = final->mutable_timings();
  t->set_ingest_ms(outcome.ingest_ms);
  t->set_prefill_ms(outcome.prefill_ms);
  t->set_decode_ms(outcome.decode_ms);
  t->set_total_ms(MsSince(start_));
  return event;
}

void InferenceCall::OnIngestProgress(int64_t done_us, int64_t total_us) {
  v1::AskEvent event;
  event.mutable_ingest_progress()->set_media_done_us(done_us);
  event.mutable_ingest_progress()->set_media_total_us(total_us);
  Push(std::move(event));
}

void InferenceCall::OnPrefillProgress(int question_index, int64_t done_tokens, int64_t total_tokens) {
  v1::AskEvent event;
  event.mutable_prefill_progress()->set_question_index(question_index);
  event.mutable_prefill_progress()->set_tokens_done(done_tokens);
  event.mutable_prefill_progress()->set_tokens_total(total_tokens);
  Push(std::move(event));
}

void InferenceCall::OnAnswerDelta(int question_index, std::string_view text) {
  v1::AskEvent event;
  event.mutable_answer()->set_question_index(question_index);
  event.mutable_answer()->set_text(std::string(text));
  Push(std::move(event));
}

void InferenceCall::OnChunk(int chunk_index, int num_chunks, int64_t start_us, int64_t end_us, bool done) {
  v1::AskEvent event;
  v1::ChunkProgress* c = event.mutable_chunk_progress();
  c->set_chunk_index(chunk_index);
  c->set_num_chunks(num_chunks);
  c->set_start_us(start_us);
  c->set_end_us(end_us);
  c->set_done(done);
  Push(std::move(event));
}

// --- Note [Call lifetime] -------------------------------------------------------------------------
// Events queue in pending_; one write is in flight at a time. Complete() records the final status,
// which is sent after the queue drains (or at once when the client is gone). The reactor API is
// only called with mu_ released (a reaction may run inline) and never after OnDone.

void InferenceCall::Push(v1::AskEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (done_ || final_status_.has_value()) return;
    pending_.push_back(std::move(event));
  }
  MaybeWrite();
}

void InferenceCall::Complete(const absl::Status& status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (final_status_.has_value()) return;
    final_status_ = status;
    if (!status.ok()) pending_.clear();
  }
  RecordRpc(env_, kind_ == Kind::kAsk ? "Ask" : "Summarize", status, start_);
  MaybeWrite();
}

void InferenceCall::MaybeWrite() {
  std::unique_lock<std::mutex> lock(mu_);
  if (done_ || writing_ || finish_called_) return;
  if (!pending_.empty()) {
    in_flight_ = std::move(pending_.front());
    pending_.pop_front();
    writing_ = true;
    lock.unlock();
    StartWrite(&in_flight_);
    return;
  }
  if (final_status_.has_value()) {
    finish_called_ = true;
    grpc::Status status = ToGrpcStatus(*final_status_);
    lock.unlock();
    Finish(status);
  }
}

void InferenceCall::OnWriteDone(bool ok) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) pending_.clear();  // the client is gone; only Finish remains
  }
  if (!ok) cancel_ = true;
  MaybeWrite();
}

void InferenceCall::OnCancel() {
  cancel_ = true;  // polled by the engine between layers/chunks; it releases the request's memory
  Complete(absl::CancelledError("cancelled by the client or its deadline"));
}

void InferenceCall::OnDone() {
  std::shared_ptr<InferenceCall> keep;
  std::lock_guard<std::mutex> lock(mu_);
  done_ = true;
  keep.swap(self_);  // released after the lock (the engine may still hold a reference)
}

}  // namespace avserve::service
