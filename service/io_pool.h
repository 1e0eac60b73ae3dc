// A few threads for blocking file work (hashing, fsync, probing) so gRPC callback threads never block.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace avserve::service {

class IoPool {
 public:
  explicit IoPool(int num_threads);
  ~IoPool();  // runs what is queued, then joins
  IoPool(const IoPool&) = delete;
  IoPool& operator=(const IoPool&) = delete;
  void Post(std::function<void()> work);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace avserve::service
