// KvCache forks (engine/model/kv_cache.h): a copy holds the source's computed positions (in smaller rings for
// shorter steps, which grow back), and SharedWith reports the positions that forks of one original hold alike
// (what a batched decode step reads once for all of them).
#include "engine/model/kv_cache.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/model/config.h"

namespace avserve::engine {
namespace {

// One sliding layer (ring of window - 1 + chunk rows) and one full layer, 2 KV heads of 8 dims.
ModelConfig TwoLayers() {
  ModelConfig c;
  c.sliding_window = 4;
  for (bool sliding : {true, false}) {
    LayerConfig l;
    l.sliding = sliding;
    l.head_dim = 8;
    l.num_kv_heads = 2;
    c.layers.push_back(l);
  }
  return c;
}

void Fill(const Tensor& t, uint16_t seed) {
  auto* p = t.ptr<uint16_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<uint16_t>(seed + i);
}

std::vector<uint16_t> Rows(const Tensor& t, int64_t begin, int64_t end) {
  const Tensor s = t.Slice(begin, end);
  return std::vector<uint16_t>(s.ptr<uint16_t>(), s.ptr<uint16_t>() + s.numel());
}

// A cache of TwoLayers for 64 positions whose every K/V element holds a distinct value.
absl::StatusOr<KvCache> FilledCache(Backend& be, int64_t max_chunk) {
  absl::StatusOr<KvCache> cache = KvCache::Create(be, TwoLayers(), DType::kBF16, /*max_tokens=*/64, max_chunk);
  if (!cache.ok()) return cache;
  for (int l = 0; l < 2; ++l) {
    Fill(cache->k(l), static_cast<uint16_t>(100 * l + 1));
    Fill(cache->v(l), static_cast<uint16_t>(100 * l + 50));
  }
  return cache;
}

TEST(KvCacheTest, CopyHoldsTheComputedPositionsOfBothLayerKinds) {
  auto be = CreateCpuBackend(1);
  auto src = FilledCache(*be, /*max_chunk=*/8);
  ASSERT_TRUE(src.ok()) << src.status();
  auto copy = src->Copy(*be, /*stable=*/20, /*length=*/26);
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_EQ(copy->capacity(0), src->capacity(0));
  EXPECT_EQ(copy->capacity(1), 64);
  // The sliding ring whole; the full layer's positions [0, 26), shared or copied.
  EXPECT_EQ(Rows(copy->k(0), 0, copy->capacity(0)), Rows(src->k(0), 0, src->capacity(0)));
  EXPECT_EQ(Rows(copy->v(0), 0, copy->capacity(0)), Rows(src->v(0), 0, src->capacity(0)));
  EXPECT_EQ(Rows(copy->k(1), 0, 26), Rows(src->k(1), 0, 26));
  EXPECT_EQ(Rows(copy->v(1), 0, 26), Rows(src->v(1), 0, 26));
  EXPECT_NE(copy->k(1).data, src->k(1).data);
}

// Note [Fork rings]: a copy for steps of 2 positions, forked with a provisional tail of 3, gets a ring for steps of
// 3 (window 4: 6 rows) that holds the last 6 positions, each in its own row; GrowRings brings it back to the
// source's 19 rows with every position moved to its new row; the memory reported follows both.
TEST(KvCacheTest, ACopyForShortStepsHoldsTheLastPositionsAndGrowsBack) {
  auto be = CreateCpuBackend(1);
  auto src = FilledCache(*be, /*max_chunk=*/16);
  ASSERT_TRUE(src.ok()) << src.status();
  const int64_t length = 43;
  const auto holds_positions = [&](const KvCache& c, int64_t from) {
    for (int64_t p = from; p < length; ++p) {
      const int64_t r = p % c.capacity(0), rs = p % src->capacity(0);
      EXPECT_EQ(Rows(c.k(0), r, r + 1), Rows(src->k(0), rs, rs + 1)) << "position " << p;
      EXPECT_EQ(Rows(c.v(0), r, r + 1), Rows(src->v(0), rs, rs + 1)) << "position " << p;
    }
    EXPECT_EQ(Rows(c.k(1), 0, length), Rows(src->k(1), 0, length));
  };
  auto small = src->Copy(*be, /*stable=*/40, length, /*max_chunk=*/2);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->max_chunk(), 3);
  EXPECT_EQ(small->capacity(0), 6);
  EXPECT_EQ(small->capacity(1), 64);
  EXPECT_LT(small->bytes(), src->bytes());
  holds_positions(*small, length - 6);
  ASSERT_TRUE(small->GrowRings(*be, 16, length).ok());
  EXPECT_EQ(small->max_chunk(), 16);
  EXPECT_EQ(small->capacity(0), src->capacity(0));
  EXPECT_EQ(small->bytes(), src->bytes());
  holds_positions(*small, length - 6);
  // Never larger than the source's rings.
  auto same = src->Copy(*be, 40, length, /*max_chunk=*/100);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->capacity(0), src->capacity(0));
  holds_positions(*same, length - src->capacity(0));
}

TEST(KvCacheTest, SharedWithFollowsTheLineage) {
  auto be = CreateCpuBackend(1);
  auto root = KvCache::Create(*be, TwoLayers(), DType::kBF16, 64, 8);
  auto other = KvCache::Create(*be, TwoLayers(), DType::kBF16, 64, 8);
  ASSERT_TRUE(root.ok() && other.ok());
  auto a = root->Copy(*be, 10, 10);   // forked at 10
  auto b = root->Copy(*be, 30, 32);   // forked later, with a provisional tail of 2
  ASSERT_TRUE(a.ok() && b.ok());
  auto c = a->Copy(*be, 40, 40);      // a fork of a fork
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(root->SharedWith(*a), 10);
  EXPECT_EQ(a->SharedWith(*root), 10);
  EXPECT_EQ(root->SharedWith(*b), 30);  // the tail is recomputed later: not shared
  EXPECT_EQ(a->SharedWith(*b), 10);
  EXPECT_EQ(c->SharedWith(*b), 10);     // through the root: c holds the root's values up to 10 only
  EXPECT_EQ(c->SharedWith(*a), 10);     // an undercount (c copied a up to 40), never more than is true
  EXPECT_EQ(root->SharedWith(*other), 0);
  EXPECT_EQ(a->SharedWith(*other), 0);
}

}  // namespace
}  // namespace avserve::engine
