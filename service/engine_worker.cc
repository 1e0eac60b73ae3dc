#include "service/engine_worker.h"

#include <malloc.h>

#include "absl/strings/str_cat.h"

namespace avserve::service {

EngineWorker::EngineWorker(std::unique_ptr<InferenceBackend> backend, int max_queued)
    : backend_(std::move(backend)), backend_name_(backend_->name()), max_queued_(max_queued) {
  thread_ = std::thread([this] { Loop(); });
}

EngineWorker::~EngineWorker() { Stop(); }

absl::Status EngineWorker::Submit(std::shared_ptr<EngineTask> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("server is shutting down");
    if (static_cast<int>(interactive_.size()) >= max_queued_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("server busy: ", interactive_.size(), " requests already queued; retry later"));
    }
    interactive_.push_back(std::move(task));
  }
  cv_.notify_one();
  return absl::OkStatus();
}

absl::Status EngineWorker::SubmitBackground(std::shared_ptr<EngineTask> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("server is shutting down");
    if (!background_.empty()) return absl::ResourceExhaustedError("background slot taken");
    background_.push_back(std::move(task));
  }
  cv_.notify_one();
  return absl::OkStatus();
}

void EngineWorker::Loop() {
  for (;;) {
    std::shared_ptr<EngineTask> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !interactive_.empty() || !background_.empty(); });
      if (stopping_) return;
      auto& queue = interactive_.empty() ? background_ : interactive_;
      task = std::move(queue.front());
      queue.pop_front();
      running_task_ = true;
    }
    task->Run(*backend_);
    task.reset();  // release the request's state on the engine thread, before taking the next one
    // A finished or cancelled request's memory goes back to the system, not just to malloc's free
    // lists: prefill buffers are large and RSS is what operators (and the cancellation test) watch.
    malloc_trim(0);
    std::lock_guard<std::mutex> lock(mu_);
    running_task_ = false;
  }
}

void EngineWorker::Stop() {
  std::deque<std::shared_ptr<EngineTask>> abandoned;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    abandoned.swap(interactive_);
    for (auto& t : background_) abandoned.push_back(std::move(t));
    background_.clear();
  }
  cv_.notify_all();
  for (auto& task : abandoned) task->Abandon(absl::UnavailableError("server is shutting down"));
  if (thread_.joinable()) thread_.join();
}

int64_t EngineWorker::queue_depth() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(interactive_.size());
}

bool EngineWorker::busy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_task_;
}

BackendStats EngineWorker::backend_stats() const { return backend_->stats(); }

}  // namespace avserve::service
