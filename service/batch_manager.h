// Batch jobs: the journal (batch_journal.h) plus one runner thread that feeds items, media-major, to
// the engine's background lane, so consecutive questions on one media hit the prefix cache and
// interactive requests always go first. Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "service/batch_journal.h"
#include "service/engine_worker.h"
#include "service/media_store.h"
#include "service/metrics.h"

namespace avserve::service {

enum class BatchJobStatus { kQueued, kRunning, kSucceeded, kCancelled };

struct BatchJobSnapshot {
  BatchJobSpec spec;
  BatchJobStatus status = BatchJobStatus::kQueued;
  int finished_items = 0;
  int failed_items = 0;
  std::vector<BatchItemResult> results;  // only when asked for
};

inline constexpr int kMaxBatchItems = 10000;

class BatchManager {
 public:
  // Loads every job under <data_dir>/batches and resumes unfinished ones once Start() is called.
  static absl::StatusOr<std::unique_ptr<BatchManager>> Open(const std::string& data_dir, EngineWorker* engine,
                                                            MediaStore* media, Metrics* metrics);
  ~BatchManager();
  void Start();
  // Cancels the running item (it is not recorded; it reruns after a restart) and joins the runner.
  void Stop();

  // Validates (media ids exist, size limits), persists, queues. Fills spec.job_id/created time.
  absl::StatusOr<BatchJobSnapshot> Submit(BatchJobSpec spec);
  absl::StatusOr<BatchJobSnapshot> Get(const std::string& job_id, bool include_results);
  std::vector<BatchJobSnapshot> List();
  absl::StatusOr<BatchJobSnapshot> Cancel(const std::string& job_id);
  // Results [from, end) of a job in finish order; *finished tells whether more can come.
  absl::Status ResultsSince(const std::string& job_id, size_t from, std::vector<BatchItemResult>* out,
                            bool* finished);
  // `notify` runs (on the runner thread, no locks held) after every new result or state change.
  int AddListener(std::function<void()> notify);
  void RemoveListener(int id);
  int64_t active_jobs();

 private:
  struct Job {
    BatchJobSpec spec;
    std::unique_ptr<BatchJournal> journal;
    std::vector<BatchItemResult> results;
    std::vector<bool> done;  // [total_items]
    bool cancelled = false;
    bool running = false;
    bool finished() const { return cancelled || static_cast<int>(results.size()) == spec.total_items(); }
  };
  BatchManager(std::string batches_dir, EngineWorker* engine, MediaStore* media, Metrics* metrics);
  void RunLoop();
  // The next (job, item) to run, or false when there is none. Requires mu_.
  bool NextItem(std::string* job_id, int* item_index);
  BatchItemResult RunItem(const BatchJobSpec& spec, int item_index, bool* recorded);
  BatchJobSnapshot Snapshot(const Job& job, bool include_results) const;
  void NotifyListeners();

  const std::string batches_dir_;
  EngineWorker* engine_;
  MediaStore* media_;
  Metrics* metrics_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Job> jobs_;  // ids sort by creation time (job-<unix ms>-<random>)
  std::shared_ptr<std::atomic<bool>> current_cancel_;
  std::string current_job_;
  bool stopping_ = false;
  std::thread runner_;
  std::recursive_mutex listeners_mu_;  // a listener may remove itself while notified
  std::map<int, std::function<void()>> listeners_;
  int next_listener_ = 0;
};

}  // namespace avserve::service
