#include "ingest/serial_worker.h"

#include <algorithm>
#include <utility>

namespace avserve::ingest {

SerialWorker::SerialWorker(bool threaded, size_t max_queued) : max_queued_(std::max<size_t>(max_queued, 1)) {
  if (threaded) thread_ = std::thread([this] { Loop(); });
}

SerialWorker::~SerialWorker() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void SerialWorker::Submit(std::function<void()> job) {
  if (!thread_.joinable()) {
    job();
    return;
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait(lock, [this] { return jobs_.size() < max_queued_; });
    jobs_.push_back(std::move(job));
  }
  changed_.notify_all();
}

void SerialWorker::WaitIdle() {
  if (!thread_.joinable()) return;
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [this] { return jobs_.empty(); });
}

void SerialWorker::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    changed_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
    if (jobs_.empty()) return;  // stopping, nothing left
    std::function<void()>& job = jobs_.front();
    lock.unlock();
    job();
    lock.lock();
    jobs_.pop_front();  // only the worker pops, so the reference stayed valid
    changed_.notify_all();
  }
}

}  // namespace avserve::ingest
