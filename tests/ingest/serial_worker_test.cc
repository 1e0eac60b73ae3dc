#include "ingest/serial_worker.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace avserve::ingest {
namespace {

TEST(SerialWorkerTest, RunsJobsInOrderOffTheCallingThread) {
  for (bool threaded : {true, false}) {
    std::vector<int> order;  // written by the worker only, read after WaitIdle
    std::vector<std::thread::id> ids;
    SerialWorker worker(threaded, 2);
    for (int i = 0; i < 50; ++i) {
      worker.Submit([&order, &ids, i] {
        order.push_back(i);
        ids.push_back(std::this_thread::get_id());
      });
    }
    worker.WaitIdle();
    ASSERT_EQ(order.size(), 50u);
    for (int i = 0; i < 50; ++i) EXPECT_EQ(order[i], i);
    for (const auto& id : ids) EXPECT_EQ(id == std::this_thread::get_id(), !threaded);
  }
}

TEST(SerialWorkerTest, SubmitBlocksWhileTheQueueIsFull) {
  std::atomic<bool> release{false};
  std::atomic<int> started{0};
  SerialWorker worker(true, 2);
  auto slow = [&] {
    ++started;
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  worker.Submit(slow);
  worker.Submit(slow);  // queue full: one running, one waiting
  std::atomic<bool> third_queued{false};
  std::thread submitter([&] {
    worker.Submit([] {});
    third_queued = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(third_queued);
  EXPECT_LE(started, 1);  // the second job waits for the first
  release = true;
  submitter.join();
  EXPECT_TRUE(third_queued);
  worker.WaitIdle();
  EXPECT_EQ(started, 2);
}

TEST(SerialWorkerTest, DestructorFinishesQueuedJobs) {
  std::atomic<int> done{0};
  {
    SerialWorker worker(true, 4);
    for (int i = 0; i < 4; ++i) {
      worker.Submit([&done] {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        ++done;
      });
    }
  }
  EXPECT_EQ(done, 4);
}

}  // namespace
}  // namespace avserve::ingest
