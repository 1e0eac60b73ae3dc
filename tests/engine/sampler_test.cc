#include "engine/model/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <vector>

namespace avserve::engine {
namespace {

TEST(SamplerTest, GreedyTakesLowestIndexAmongEqualMaxima) {
  Sampler s(SamplingOptions{}, {});
  EXPECT_EQ(s.Sample(std::vector<float>{0.f, 3.f, 1.f, 3.f}), 1);
}

// Greedy scans eight running maxima, then the first id holding the maximum: a NaN anywhere is skipped, a maximum
// in the tail past the last full group of 8 is found, equal maxima in different lanes give the lowest id, and
// -0 equals +0.
TEST(SamplerTest, GreedySkipsNaNAndFindsMaximaInAnyLaneOrTheTail) {
  const float nan = std::nanf("");
  Sampler s(SamplingOptions{}, {});
  std::vector<float> v(21, -5.f);
  v[0] = nan;
  v[20] = 2.f;  // the tail (ids 16-20)
  EXPECT_EQ(s.Sample(v), 20);
  v[13] = 2.f;  // the same maximum in an earlier lane
  EXPECT_EQ(s.Sample(v), 13);
  v[7] = nan;
  v[9] = 4.f;
  EXPECT_EQ(s.Sample(v), 9);
  std::vector<float> zeros(10, -1.f);
  zeros[6] = 0.f;
  zeros[3] = -0.f;
  EXPECT_EQ(s.Sample(zeros), 3);
  std::vector<float> none(9, -std::numeric_limits<float>::infinity());
  none[4] = nan;
  EXPECT_EQ(s.Sample(none), 0);  // nothing above -inf: the careful scan takes the first id that is no NaN
}

TEST(SamplerTest, SuppressedIdsAreNeverChosen) {
  Sampler greedy(SamplingOptions{}, {1});
  EXPECT_EQ(greedy.Sample(std::vector<float>{0.f, 9.f, 1.f}), 2);
  SamplingOptions o;
  o.temperature = 5.0f;
  Sampler hot(o, {0, 2});
  for (int i = 0; i < 200; ++i) EXPECT_EQ(hot.Sample(std::vector<float>{9.f, 0.f, 9.f}), 1);
  Sampler all(SamplingOptions{}, {0, 1});
  EXPECT_EQ(all.Sample(std::vector<float>{1.f, 2.f}), -1);
}

TEST(SamplerTest, SameSeedSameTokensOtherSeedDiffers) {
  SamplingOptions o;
  o.temperature = 1.0f;
  o.seed = 7;
  std::vector<float> logits(64);
  for (int i = 0; i < 64; ++i) logits[i] = 0.05f * (i % 13);
  auto draw = [&](uint64_t seed) {
    o.seed = seed;
    Sampler s(o, {});
    std::vector<int32_t> out;
    for (int i = 0; i < 50; ++i) out.push_back(s.Sample(logits));
    return out;
  };
  EXPECT_EQ(draw(7), draw(7));
  EXPECT_NE(draw(7), draw(8));
}

TEST(SamplerTest, TopKAndTopPRestrictTheCandidates) {
  const std::vector<float> logits = {2.0f, 1.9f, 1.8f, -5.0f, 1.7f};
  SamplingOptions k;
  k.temperature = 1.0f;
  k.top_k = 2;
  Sampler sk(k, {});
  std::map<int32_t, int> seen;
  for (int i = 0; i < 400; ++i) ++seen[sk.Sample(logits)];
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[0], 0);
  EXPECT_GT(seen[1], 0);
  SamplingOptions p;
  p.temperature = 1.0f;
  p.top_p = 0.01f;  // only the most likely survives
  Sampler sp(p, {});
  for (int i = 0; i < 100; ++i) EXPECT_EQ(sp.Sample(logits), 0);
}

// top-p over a vocabulary-sized candidate list: every draw lies in the smallest most-likely prefix whose mass
// reaches top_p (computed here by a full sort), and draws reach past the first 256 candidates, the head the
// sampler sorts first, when the prefix is longer than that.
TEST(SamplerTest, TopPKeepsTheSmallestHeavyPrefixOfALargeVocabulary) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.f, 0.3f);
  std::vector<float> logits(20000);
  for (float& v : logits) v = dist(rng);
  SamplingOptions o;
  o.temperature = 1.0f;
  o.top_p = 0.5f;
  o.seed = 11;
  std::vector<int32_t> order(logits.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  double sum = 0.0, mass = 0.0;
  for (float v : logits) sum += std::exp(static_cast<double>(v));
  size_t prefix = 0;
  while (mass < 0.5) mass += std::exp(static_cast<double>(logits[order[prefix++]])) / sum;
  ASSERT_GT(prefix, 256u);
  std::vector<int> rank(logits.size());
  for (size_t r = 0; r < order.size(); ++r) rank[order[r]] = static_cast<int>(r);
  Sampler s(o, {});
  int beyond_head = 0;
  for (int i = 0; i < 200; ++i) {
    const int32_t t = s.Sample(logits);
    ASSERT_GE(t, 0);
    EXPECT_LT(rank[t], static_cast<int>(prefix)) << "token " << t << " is outside the top-p prefix";
    beyond_head += rank[t] >= 256;
  }
  EXPECT_GT(beyond_head, 50);
}

TEST(SamplerTest, TemperatureSamplingFollowsTheDistribution) {
  SamplingOptions o;
  o.temperature = 1.0f;
  Sampler s(o, {});
  const std::vector<float> logits = {0.0f, std::log(3.0f)};  // p = 1/4, 3/4
  int ones = 0;
  for (int i = 0; i < 4000; ++i) ones += s.Sample(logits) == 1;
  EXPECT_NEAR(ones / 4000.0, 0.75, 0.03);
}

}  // namespace
}  // namespace avserve::engine
