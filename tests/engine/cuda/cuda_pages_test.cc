// Shareable KV pages (engine/backend/cuda/page_buffer.h, Note [Forked KV pages]): a fork reads its source's
// prefix, shares the pages wholly inside it, and neither buffer sees the other's later writes. Skips where no
// CUDA device exists.
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/cuda/page_buffer.h"
#include "gtest/gtest.h"
#include "tests/engine/cuda/test_util.h"

namespace avserve::engine::cuda {
namespace {

using testing::HaveDevice;

std::vector<uint32_t> Pattern(size_t words, uint32_t seed) {
  std::vector<uint32_t> v(words);
  std::iota(v.begin(), v.end(), seed);
  return v;
}

void Put(const Buffer& b, size_t offset_words, const std::vector<uint32_t>& v) {
  ASSERT_EQ(cudaMemcpy(static_cast<uint32_t*>(b.data()) + offset_words, v.data(), v.size() * 4,
                       cudaMemcpyHostToDevice),
            cudaSuccess);
}

std::vector<uint32_t> Get(const Buffer& b, size_t offset_words, size_t words) {
  std::vector<uint32_t> v(words);
  EXPECT_EQ(cudaMemcpy(v.data(), static_cast<const uint32_t*>(b.data()) + offset_words, words * 4,
                       cudaMemcpyDeviceToHost),
            cudaSuccess);
  return v;
}

class CudaPagesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
    if (!PageBuffer::Supported(0)) GTEST_SKIP() << "the device does not map pages (CUDA VMM)";
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  }
};

TEST_F(CudaPagesTest, ForkSharesWholePagesAndCopiesThePartOne) {
  constexpr size_t kBytes = size_t{48} << 20;  // a few pages of at least 2 MiB
  auto src = PageBuffer::Create(kBytes, 0, nullptr);
  ASSERT_TRUE(src.ok()) << src.status();
  const size_t page = (*src)->page_bytes(), words = kBytes / 4;
  ASSERT_GE(kBytes / page, 3u);
  const std::vector<uint32_t> values = Pattern(words, 11);
  Put(**src, 0, values);
  // The prefix ends inside page 2: pages 0 and 1 are shared, page 2 is copied up to the prefix's end.
  const size_t prefix = 2 * page + 4096;
  size_t free_before = 0, free_after = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_before, &total), cudaSuccess);
  auto fork = PageBuffer::Fork(**src, prefix);
  ASSERT_TRUE(fork.ok()) << fork.status();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(cudaMemGetInfo(&free_after, &total), cudaSuccess);
  EXPECT_EQ((*fork)->shared_pages(), 2);
  EXPECT_EQ((*fork)->bytes(), kBytes);
  EXPECT_NE((*fork)->data(), (*src)->data());
  // New memory: the pages past the shared ones only (the driver may round up a little).
  EXPECT_LE(free_before - free_after, kBytes - 2 * page + (size_t{4} << 20));
  const std::vector<uint32_t> want(values.begin(), values.begin() + prefix / 4);
  EXPECT_EQ(Get(**fork, 0, prefix / 4), want);

  // Writes past the prefix stay in their own buffer, in the copied page and in a later one.
  const std::vector<uint32_t> fork_tail = Pattern(1024, 900000), src_tail = Pattern(1024, 700000);
  Put(**fork, prefix / 4, fork_tail);
  Put(**src, prefix / 4 + 2048, src_tail);
  Put(**fork, words - 1024, fork_tail);
  EXPECT_EQ(Get(**src, prefix / 4, 1024), std::vector<uint32_t>(values.begin() + prefix / 4,
                                                                 values.begin() + prefix / 4 + 1024));
  EXPECT_EQ(Get(**src, words - 1024, 1024), std::vector<uint32_t>(values.end() - 1024, values.end()));
  EXPECT_EQ(Get(**fork, prefix / 4, 1024), fork_tail);

  // The shared pages outlive the source, and a fork of the fork shares them too.
  src->reset();
  EXPECT_EQ(Get(**fork, 0, prefix / 4), want);
  auto grandchild = PageBuffer::Fork(**fork, prefix + 4096);
  ASSERT_TRUE(grandchild.ok()) << grandchild.status();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ((*grandchild)->shared_pages(), 2);
  std::vector<uint32_t> want2 = want;
  want2.insert(want2.end(), fork_tail.begin(), fork_tail.end());
  EXPECT_EQ(Get(**grandchild, 0, prefix / 4 + 1024), want2);
}

TEST_F(CudaPagesTest, EmptyAndWholePrefixes) {
  constexpr size_t kBytes = (size_t{5} << 20) + 512;  // not a whole number of pages
  auto src = PageBuffer::Create(kBytes, 0, nullptr);
  ASSERT_TRUE(src.ok()) << src.status();
  const std::vector<uint32_t> values = Pattern(kBytes / 4, 5);
  Put(**src, 0, values);
  auto none = PageBuffer::Fork(**src, 0);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ((*none)->shared_pages(), 0);
  auto all = PageBuffer::Fork(**src, kBytes);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(static_cast<size_t>((*all)->shared_pages()), kBytes / (*src)->page_bytes());
  EXPECT_EQ(Get(**all, 0, values.size()), values);
}

// Through the backend: KV storage from AllocateShareable forks by pages; a plain buffer forks by copying.
TEST_F(CudaPagesTest, BackendForkBufferCopiesThePrefixEitherWay) {
  auto backend = CreateCudaBackend();
  ASSERT_TRUE(backend.ok()) << backend.status();
  constexpr size_t kBytes = size_t{8} << 20, kPrefix = (size_t{3} << 20) + 1024;
  const std::vector<uint32_t> values = Pattern(kBytes / 4, 3);
  for (bool shareable : {true, false}) {
    SCOPED_TRACE(shareable ? "shareable" : "plain");
    auto src = shareable ? (*backend)->AllocateShareable(kBytes) : (*backend)->Allocate(kBytes);
    ASSERT_TRUE(src.ok()) << src.status();
    EXPECT_EQ(dynamic_cast<PageBuffer*>(src->get()) != nullptr, shareable);
    Put(**src, 0, values);
    auto fork = (*backend)->ForkBuffer(**src, kPrefix);
    ASSERT_TRUE(fork.ok()) << fork.status();
    (*backend)->Synchronize();
    EXPECT_EQ(Get(**fork, 0, kPrefix / 4), std::vector<uint32_t>(values.begin(), values.begin() + kPrefix / 4));
  }
}

}  // namespace
}  // namespace avserve::engine::cuda
