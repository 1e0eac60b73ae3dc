// The one thread that owns the inference backend (and through it the engine and its device).
// gRPC callback threads hand tasks over and return at once; admission is a bounded queue.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "service/inference_backend.h"

namespace avserve::service {

class EngineTask {
 public:
  virtual ~EngineTask() = default;
  // On the engine thread.
  virtual void Run(InferenceBackend& backend) = 0;
  // The task will never run (server shutting down). Any thread; must not block.
  virtual void Abandon(const absl::Status& why) = 0;
};

class EngineWorker {
 public:
  // `max_queued`: interactive tasks that may wait while one runs; more get RESOURCE_EXHAUSTED.
  EngineWorker(std::unique_ptr<InferenceBackend> backend, int max_queued);
  ~EngineWorker();  // Stop()
  EngineWorker(const EngineWorker&) = delete;
  EngineWorker& operator=(const EngineWorker&) = delete;

  // Interactive requests. RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE after Stop().
  absl::Status Submit(std::shared_ptr<EngineTask> task);
  // Background work (batch jobs): runs only when no interactive task waits; at most one queued.
  absl::Status SubmitBackground(std::shared_ptr<EngineTask> task);
  // Abandons queued tasks, waits for the running one, joins the thread. Idempotent.
  void Stop();

  int64_t queue_depth() const;
  bool busy() const;
  // Safe from any thread (BackendStats is a snapshot the backend keeps thread-safe).
  BackendStats backend_stats() const;
  std::string backend_name() const { return backend_name_; }

 private:
  void Loop();

  std::unique_ptr<InferenceBackend> backend_;
  const std::string backend_name_;
  const int max_queued_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<EngineTask>> interactive_;
  std::deque<std::shared_ptr<EngineTask>> background_;
  bool stopping_ = false;
  bool running_task_ = false;
  std::thread thread_;
};

}  // namespace avserve::service
