#include "service/engine_worker.h"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/service/fake_backend.h"

namespace avserve::service {
namespace {

// Records the order tasks ran in; the first one can be held until released.
class Recorder {
 public:
  void Ran(int id) {
    std::lock_guard<std::mutex> lock(mu_);
    order_.push_back(id);
    cv_.notify_all();
  }
  void Abandoned(int id) {
    std::lock_guard<std::mutex> lock(mu_);
    abandoned_.push_back(id);
  }
  void WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return order_.size() >= n; });
  }
  std::vector<int> order() {
    std::lock_guard<std::mutex> lock(mu_);
    return order_;
  }
  std::vector<int> abandoned() {
    std::lock_guard<std::mutex> lock(mu_);
    return abandoned_;
  }
  std::mutex gate;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> order_, abandoned_;
};

class Task final : public EngineTask {
 public:
  Task(Recorder* r, int id, bool hold) : r_(r), id_(id), hold_(hold) {}
  void Run(InferenceBackend&) override {
    if (hold_) std::lock_guard<std::mutex> wait(r_->gate);
    r_->Ran(id_);
  }
  void Abandon(const absl::Status&) override { r_->Abandoned(id_); }

 private:
  Recorder* r_;
  int id_;
  bool hold_;
};

std::unique_ptr<InferenceBackend> Backend() {
  return std::make_unique<testing::FakeBackend>(testing::FakeBackendOptions{});
}

TEST(EngineWorkerTest, RejectsWithResourceExhaustedWhenTheQueueIsFull) {
  Recorder r;
  EngineWorker worker(Backend(), /*max_queued=*/2);
  std::unique_lock<std::mutex> hold(r.gate);
  ASSERT_TRUE(worker.Submit(std::make_shared<Task>(&r, 0, true)).ok());
  while (!worker.busy()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(worker.Submit(std::make_shared<Task>(&r, 1, false)).ok());
  ASSERT_TRUE(worker.Submit(std::make_shared<Task>(&r, 2, false)).ok());
  EXPECT_EQ(worker.queue_depth(), 2);
  EXPECT_EQ(worker.Submit(std::make_shared<Task>(&r, 3, false)).code(), absl::StatusCode::kResourceExhausted);
  hold.unlock();
  r.WaitFor(3);
  EXPECT_EQ(r.order(), (std::vector<int>{0, 1, 2}));
}

TEST(EngineWorkerTest, InteractiveTasksRunBeforeBackgroundOnes) {
  Recorder r;
  EngineWorker worker(Backend(), 8);
  std::unique_lock<std::mutex> hold(r.gate);
  ASSERT_TRUE(worker.Submit(std::make_shared<Task>(&r, 0, true)).ok());
  while (!worker.busy()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(worker.SubmitBackground(std::make_shared<Task>(&r, 10, false)).ok());
  EXPECT_EQ(worker.SubmitBackground(std::make_shared<Task>(&r, 11, false)).code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(worker.Submit(std::make_shared<Task>(&r, 1, false)).ok());
  hold.unlock();
  r.WaitFor(3);
  EXPECT_EQ(r.order(), (std::vector<int>{0, 1, 10}));
}

TEST(EngineWorkerTest, StopAbandonsQueuedTasksAndRefusesNewOnes) {
  Recorder r;
  EngineWorker worker(Backend(), 8);
  std::unique_lock<std::mutex> hold(r.gate);
  ASSERT_TRUE(worker.Submit(std::make_shared<Task>(&r, 0, true)).ok());
  while (!worker.busy()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(worker.Submit(std::make_shared<Task>(&r, 1, false)).ok());
  std::thread stopper([&] { worker.Stop(); });
  while (r.abandoned().empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  hold.unlock();
  stopper.join();
  EXPECT_EQ(r.order(), (std::vector<int>{0}));
  EXPECT_EQ(r.abandoned(), (std::vector<int>{1}));
  EXPECT_EQ(worker.Submit(std::make_shared<Task>(&r, 2, false)).code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace avserve::service
