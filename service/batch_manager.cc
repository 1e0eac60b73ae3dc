#include "service/batch_manager.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "service/file_util.h"
#include "service/log.h"
#include "service/request_parsing.h"

namespace avserve::service {
namespace {

// Runs one batch item on the engine's background lane and hands the outcome back to the runner.
class BatchItemTask final : public EngineTask, public AskObserver {
 public:
  BatchItemTask(AskSpec spec, std::shared_ptr<std::atomic<bool>> cancel)
      : spec_(std::move(spec)), cancel_(std::move(cancel)) {}

  void Run(InferenceBackend& backend) override {
    auto outcome = cancel_->load() ? absl::StatusOr<AskOutcome>(absl::CancelledError("cancelled"))
                                   : backend.Ask(spec_, *this, *cancel_);
    Deliver(std::move(outcome));
  }
  void Abandon(const absl::Status& why) override { Deliver(why); }
  void OnIngestProgress(int64_t, int64_t) override {}
  void OnPrefillProgress(int, int64_t, int64_t) override {}
  void OnAnswerDelta(int, std::string_view) override {}

  absl::StatusOr<AskOutcome> Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return outcome_.has_value(); });
    return *std::move(outcome_);
  }

 private:
  void Deliver(absl::StatusOr<AskOutcome> outcome) {
    std::lock_guard<std::mutex> lock(mu_);
    outcome_ = std::move(outcome);
    cv_.notify_all();
  }

  AskSpec spec_;
  std::shared_ptr<std::atomic<bool>> cancel_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<absl::StatusOr<AskOutcome>> outcome_;
};

}  // namespace

BatchManager::BatchManager(std::string batches_dir, EngineWorker* engine, MediaStore* media, Metrics* metrics)
    : batches_dir_(std::move(batches_dir)), engine_(engine), media_(media), metrics_(metrics) {}

absl::StatusOr<std::unique_ptr<BatchManager>> BatchManager::Open(const std::string& data_dir, EngineWorker* engine,
                                                                 MediaStore* media, Metrics* metrics) {
  std::string dir = data_dir + "/batches";
  RETURN_IF_ERROR(MakeDirs(dir));
  std::unique_ptr<BatchManager> manager(new BatchManager(dir, engine, media, metrics));
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (!entry.is_directory() || !std::filesystem::exists(entry.path() / "job.json")) continue;
    BatchJobState state;
    auto journal = BatchJournal::Open(entry.path().string(), &state);
    if (!journal.ok()) {
      LogEvent(LogLevel::kError, "batch_load_failed",
               {{"dir", entry.path().string()}, {"error", std::string(journal.status().message())}});
      continue;
    }
    Job job;
    job.spec = std::move(state.spec);
    job.journal = *std::move(journal);
    job.done.assign(static_cast<size_t>(job.spec.total_items()), false);
    for (const auto& r : state.results) job.done[r.item_index] = true;
    job.results = std::move(state.results);
    job.cancelled = state.cancelled;
    LogEvent(LogLevel::kInfo, "batch_loaded",
             {{"job_id", job.spec.job_id}, {"finished", job.results.size()}, {"total", job.spec.total_items()}});
    std::string id = job.spec.job_id;
    manager->jobs_.emplace(std::move(id), std::move(job));
  }
  return manager;
}

BatchManager::~BatchManager() { Stop(); }

void BatchManager::Start() { runner_ = std::thread([this] { RunLoop(); }); }

void BatchManager::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    if (current_cancel_) *current_cancel_ = true;
  }
  cv_.notify_all();
  if (runner_.joinable()) runner_.join();
}

absl::StatusOr<BatchJobSnapshot> BatchManager::Submit(BatchJobSpec spec) {
  if (spec.media_ids.empty()) return absl::InvalidArgumentError("a batch needs at least one media id");
  if (spec.total_items() > kMaxBatchItems) {
    return absl::InvalidArgumentError(absl::StrCat("a batch may hold at most ", kMaxBatchItems, " items"));
  }
  for (const std::string& id : spec.media_ids) {
    auto record = media_->Get(id);
    if (!record.ok()) return absl::Status(record.status().code(), absl::StrCat(id, ": ", record.status().message()));
  }
  spec.job_id = NewJobId();
  spec.created_unix_ms = NowUnixMs();
  ASSIGN_OR_RETURN(auto journal, BatchJournal::Create(batches_dir_, spec));
  BatchJobSnapshot snapshot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Job& job = jobs_[spec.job_id];
    job.spec = std::move(spec);
    job.journal = std::move(journal);
    job.done.assign(static_cast<size_t>(job.spec.total_items()), false);
    snapshot = Snapshot(job, false);
  }
  cv_.notify_all();
  return snapshot;
}

BatchJobSnapshot BatchManager::Snapshot(const Job& job, bool include_results) const {
  BatchJobSnapshot s;
  s.spec = job.spec;
  s.status = job.cancelled   ? BatchJobStatus::kCancelled
             : job.finished() ? BatchJobStatus::kSucceeded
             : (job.running || !job.results.empty()) ? BatchJobStatus::kRunning
                                                     : BatchJobStatus::kQueued;
  s.finished_items = static_cast<int>(job.results.size());
  for (const auto& r : job.results) s.failed_items += r.status_code != 0;
  if (include_results) s.results = job.results;
  return s;
}

absl::StatusOr<BatchJobSnapshot> BatchManager::Get(const std::string& job_id, bool include_results) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("unknown job id ", job_id.substr(0, 64)));
  return Snapshot(it->second, include_results);
}

std::vector<BatchJobSnapshot> BatchManager::List() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<BatchJobSnapshot> out;
  for (const auto& [id, job] : jobs_) out.push_back(Snapshot(job, false));
  return out;
}

absl::StatusOr<BatchJobSnapshot> BatchManager::Cancel(const std::string& job_id) {
  BatchJobSnapshot snapshot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("unknown job id ", job_id.substr(0, 64)));
    Job& job = it->second;
    if (!job.finished()) {
      RETURN_IF_ERROR(job.journal->AppendCancelled());
      job.cancelled = true;
      if (current_job_ == job_id && current_cancel_) *current_cancel_ = true;
    }
    snapshot = Snapshot(job, false);
  }
  NotifyListeners();
  return snapshot;
}

absl::Status BatchManager::ResultsSince(const std::string& job_id, size_t from, std::vector<BatchItemResult>* out,
                                        bool* finished) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("unknown job id ", job_id.substr(0, 64)));
  for (size_t i = from; i < it->second.results.size(); ++i) out->push_back(it->second.results[i]);
  *finished = it->second.finished();
  return absl::OkStatus();
}

int BatchManager::AddListener(std::function<void()> notify) {
  std::lock_guard<std::recursive_mutex> lock(listeners_mu_);
  listeners_[next_listener_] = std::move(notify);
  return next_listener_++;
}

void BatchManager::RemoveListener(int id) {
  std::lock_guard<std::recursive_mutex> lock(listeners_mu_);
  listeners_.erase(id);
}

void BatchManager::NotifyListeners() {
  std::lock_guard<std::recursive_mutex> lock(listeners_mu_);
  std::vector<int> ids;
  for (const auto& [id, notify] : listeners_) ids.push_back(id);
  for (int id : ids) {
    auto it = listeners_.find(id);
    if (it == listeners_.end()) continue;
    std::function<void()> notify = it->second;  // a copy: the listener may remove itself
    notify();
  }
}

int64_t BatchManager::active_jobs() {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t n = 0;
  for (const auto& [id, job] : jobs_) n += !job.finished();
  return n;
}

bool BatchManager::NextItem(std::string* job_id, int* item_index) {
  for (auto& [id, job] : jobs_) {
    if (job.finished()) continue;
    for (int i = 0; i < job.spec.total_items(); ++i) {
      if (!job.done[i]) {
        *job_id = id;
        *item_index = i;
        return true;
      }
    }
  }
  return false;
}

BatchItemResult BatchManager::RunItem(const BatchJobSpec& spec, int item_index, bool* recorded) {
  const int num_q = static_cast<int>(spec.questions.size());
  BatchItemResult result;
  result.item_index = item_index;
  result.media_id = spec.media_ids[item_index / num_q];
  result.question_index = item_index % num_q;
  *recorded = true;
  absl::StatusOr<AskOutcome> outcome = absl::UnknownError("not run");
  auto record = media_->Get(result.media_id);
  if (!record.ok()) {
    outcome = record.status();
  } else {
    AskSpec ask{ToMediaRef(*record), spec.ingest, spec.sampling, {spec.questions[result.question_index]}, false};
    auto task = std::make_shared<BatchItemTask>(std::move(ask), current_cancel_);
    absl::Status submitted = engine_->SubmitBackground(task);
    outcome = submitted.ok() ? task->Wait() : absl::StatusOr<AskOutcome>(submitted);
  }
  if (!outcome.ok()) {
    // Interrupted (cancel, shutdown) items are not results: they run again after a restart.
    auto code = outcome.status().code();
    *recorded = code != absl::StatusCode::kCancelled && code != absl::StatusCode::kUnavailable;
    result.status_code = static_cast<int>(code);
    result.error_message = std::string(outcome.status().message());
    return result;
  }
  metrics_->RecordPrefixCache(outcome->prefix_cache_hit);
  result.prefix_tokens = outcome->prefix_tokens;
  result.prefix_cache_hit = outcome->prefix_cache_hit;
  if (!outcome->questions.empty()) {
    result.answer = outcome->questions[0].answer;
    result.suffix_tokens = outcome->questions[0].prompt_tokens;
    result.completion_tokens = outcome->questions[0].completion_tokens;
  }
  return result;
}

void BatchManager::RunLoop() {
  for (;;) {
    std::string job_id;
    int item = 0;
    BatchJobSpec spec;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || NextItem(&job_id, &item); });
      if (stopping_) return;
      Job& job = jobs_[job_id];
      job.running = true;
      spec = job.spec;
      current_job_ = job_id;
      current_cancel_ = std::make_shared<std::atomic<bool>>(false);
    }
    bool recorded = false;
    BatchItemResult result = RunItem(spec, item, &recorded);
    {
      std::lock_guard<std::mutex> lock(mu_);
      Job& job = jobs_[job_id];
      job.running = false;
      current_job_.clear();
      if (recorded && !job.cancelled && !stopping_) {
        absl::Status persisted = job.journal->AppendResult(result);  // durable before anyone sees it
        if (persisted.ok()) {
          job.done[item] = true;
          job.results.push_back(std::move(result));
        } else {
          LogEvent(LogLevel::kError, "batch_persist_failed", {{"job_id", job_id}, {"error", persisted.ToString()}});
          stopping_ = true;  // without a journal we cannot promise durability: stop running batches
        }
      }
    }
    NotifyListeners();
  }
}

}  // namespace avserve::service
