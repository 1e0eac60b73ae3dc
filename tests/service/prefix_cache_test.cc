#include "service/prefix_cache.h"

#include "gtest/gtest.h"

namespace avserve::service {
namespace {

// A sequence whose state is `length` positions of `bytes_per_token` bytes.
class CountingSequence final : public engine::Sequence {
 public:
  CountingSequence(int64_t length, size_t bytes) : length_(length), bytes_(bytes) {}
  int64_t length() const override { return length_; }
  size_t memory_bytes() const override { return bytes_; }
  absl::Status Prefill(const engine::PromptChunk& chunk, const std::atomic<bool>*) override {
    length_ += static_cast<int64_t>(chunk.size());
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<engine::Sequence>> Fork() const override {
    return std::unique_ptr<engine::Sequence>(new CountingSequence(length_, bytes_));
  }

 private:
  int64_t length_;
  size_t bytes_;
};

std::unique_ptr<engine::Sequence> Seq(int64_t length, size_t bytes) {
  return std::make_unique<CountingSequence>(length, bytes);
}

TEST(PrefixCacheTest, ForksAreIndependentOfTheCachedPrefix) {
  PrefixCache cache(1000);
  cache.Insert("a", Seq(10, 100));
  auto fork = cache.ForkCached("a");
  ASSERT_TRUE(fork.ok());
  engine::PromptChunk chunk;
  chunk.ids = {1, 2, 3};
  ASSERT_TRUE((*fork)->Prefill(chunk, nullptr).ok());
  EXPECT_EQ((*fork)->length(), 13);
  EXPECT_EQ(cache.CachedLength("a"), 10);
  EXPECT_EQ(cache.hits(), 1);
}

TEST(PrefixCacheTest, EvictsLeastRecentlyUsedUnderTheByteBudget) {
  PrefixCache cache(300);
  cache.Insert("a", Seq(1, 100));
  cache.Insert("b", Seq(2, 100));
  cache.Insert("c", Seq(3, 100));
  ASSERT_TRUE(cache.ForkCached("a").ok());  // a is now most recent; b is the LRU
  cache.Insert("d", Seq(4, 100));
  EXPECT_EQ(cache.CachedLength("b"), -1);
  EXPECT_EQ(cache.CachedLength("a"), 1);
  EXPECT_EQ(cache.CachedLength("d"), 4);
  EXPECT_EQ(cache.bytes(), 300);
  EXPECT_EQ(cache.entries(), 3);
}

TEST(PrefixCacheTest, DoesNotKeepAPrefixLargerThanTheBudget) {
  PrefixCache cache(300);
  cache.Insert("a", Seq(1, 100));
  cache.Insert("huge", Seq(1, 301));
  EXPECT_EQ(cache.CachedLength("huge"), -1);
  EXPECT_EQ(cache.CachedLength("a"), 1);  // nothing was evicted for it
}

TEST(PrefixCacheTest, ReplacingAKeyDoesNotLeakBytes) {
  PrefixCache cache(1000);
  cache.Insert("a", Seq(1, 100));
  cache.Insert("a", Seq(2, 200));
  EXPECT_EQ(cache.bytes(), 200);
  EXPECT_EQ(cache.entries(), 1);
  EXPECT_EQ(cache.ForkCached("missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cache.misses(), 1);
}

}  // namespace
}  // namespace avserve::service
