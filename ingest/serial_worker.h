// Runs jobs one at a time, in the order submitted, on one worker thread (or inline, unthreaded),
// so that converting chosen frames overlaps demuxing and decoding (media_reader.cc).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace avserve::ingest {

class SerialWorker {
 public:
  // threaded = false runs each job inside Submit. At most `max_queued` (>= 1) jobs wait or run at
  // once; Submit blocks until there is room, which bounds the memory the jobs hold.
  SerialWorker(bool threaded, size_t max_queued);
  ~SerialWorker();  // runs the jobs still queued, then joins
  SerialWorker(const SerialWorker&) = delete;
  SerialWorker& operator=(const SerialWorker&) = delete;

  void Submit(std::function<void()> job);
  // Returns once every job submitted so far has finished.
  void WaitIdle();

 private:
  void Loop();

  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<std::function<void()>> jobs_;  // the front one may be running
  bool stopping_ = false;
  std::thread thread_;  // not started when unthreaded
};

}  // namespace avserve::ingest
