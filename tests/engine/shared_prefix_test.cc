// Batched decode steps of forks (Backend::DecodeKv::shared_prefix): Gemma4Model tells the backend which leading
// positions of each sequence's caches hold the same K/V as the first sequence's (forks of one snapshot; in a
// sliding layer's ring, where both rings still hold them), never an unrelated cache. A recording backend wraps the
// CPU backend and checks each claim against the caches' bytes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/model/config.h"
#include "engine/model/gemma4.h"
#include "engine/model/kv_cache.h"
#include "engine/model/weights.h"
#include "tests/engine/forwarding_backend.h"
#include "tests/engine/golden.h"

namespace avserve::engine {
namespace {

// The CPU backend, every op delegated; AttendDecodeRows records each row's shared_prefix (one entry a call, i.e.
// a layer of a batched step) and counts the claims whose rows differ from seqs[0]'s.
class RecordingCpu final : public testing::ForwardingBackend {
 public:
  std::vector<std::vector<int64_t>> shared;  // [call][row]
  int false_claims = 0;

  std::string Name() const override { return "cpu-recording"; }
  bool RoundingDependsOnStepEnd() const override { return inner().RoundingDependsOnStepEnd(); }
  absl::StatusOr<std::unique_ptr<Buffer>> AllocateShareable(size_t bytes) override {
    return inner().AllocateShareable(bytes);
  }
  absl::StatusOr<std::unique_ptr<Buffer>> ForkBuffer(const Buffer& src, size_t prefix_bytes) override {
    return inner().ForkBuffer(src, prefix_bytes);
  }
  void RmsNormRope(const Tensor& x, const Tensor& weight, float eps, const Tensor& positions, const RopeParams& rope,
                   const Tensor& y) override {
    inner().RmsNormRope(x, weight, eps, positions, rope, y);
  }
  void QkvNorms(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& qw, const Tensor& kw, float eps,
                const Tensor& positions, const RopeParams& rope, const Tensor& q_out, const Tensor& k_out,
                const Tensor& v_out) override {
    inner().QkvNorms(q, k, v, qw, kw, eps, positions, rope, q_out, k_out, v_out);
  }
  void RmsNormAddTo(const Tensor& x, const Tensor& weight, float eps, const Tensor& residual, bool scaled,
                    float scale) override {
    inner().RmsNormAddTo(x, weight, eps, residual, scaled, scale);
  }
  void RmsNormAddToNorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& residual, bool scaled,
                        float scale, const Tensor& next_weight, const Tensor& next_out) override {
    inner().RmsNormAddToNorm(x, weight, eps, residual, scaled, scale, next_weight, next_out);
  }
  void AttendDecodeRows(const Tensor& q, const Tensor& k_new, const Tensor& v_new, const std::vector<DecodeKv>& seqs,
                        const Tensor& out) override {
    std::vector<int64_t> row;
    for (const DecodeKv& s : seqs) {
      row.push_back(s.shared_prefix);
      if (s.shared_prefix == 0) continue;
      // A claim needs positions that exist in both caches (the step's own position not among them) and equal
      // bytes at each of them that both caches still hold (a ring keeps its last kv_capacity positions).
      const int64_t cap = s.params.kv_capacity;
      bool holds = s.k.dim(0) == seqs[0].k.dim(0) && cap == seqs[0].params.kv_capacity &&
                   s.shared_prefix <= s.params.q_pos_start && s.shared_prefix <= seqs[0].params.q_pos_start;
      const int64_t oldest = std::max(s.params.q_pos_start, seqs[0].params.q_pos_start) - cap;
      for (int64_t pos = std::max<int64_t>(0, oldest); holds && pos < s.shared_prefix; ++pos) {
        holds = SameRow(s.k, seqs[0].k, pos % cap) && SameRow(s.v, seqs[0].v, pos % cap);
      }
      if (!holds) ++false_claims;
    }
    shared.push_back(std::move(row));
    inner().AttendDecodeRows(q, k_new, v_new, seqs, out);
  }

 private:
  static bool SameRow(const Tensor& a, const Tensor& b, int64_t slot) {
    const Tensor x = a.Slice(slot, slot + 1), y = b.Slice(slot, slot + 1);
    return x.bytes() == y.bytes() && std::memcmp(x.data, y.data, x.bytes()) == 0;
  }
};

class SharedPrefixTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = testing::TinyBf16();
    auto config = LoadModelConfig(dir);
    ASSERT_TRUE(config.ok()) << config.status();
    auto weights = LoadWeights(dir, *config, be_);
    ASSERT_TRUE(weights.ok()) << weights.status();
    model_ = std::make_unique<Gemma4Model>(be_, *config, *std::move(weights), /*vision_blocks_all_layers=*/false);
    std::mt19937 rng(11);
    ids_.resize(64);
    for (int32_t& id : ids_) id = 3 + static_cast<int32_t>(rng() % 400);
  }
  KvCache NewCache() {
    auto c = KvCache::Create(be_, model_->config(), model_->act_dtype(), /*max_tokens=*/64, /*max_chunk=*/16);
    EXPECT_TRUE(c.ok()) << c.status();
    return *std::move(c);
  }
  // Positions [pos0, pos0 + n) of the prompt as one pass, in steps of at most the caches' max_chunk (16).
  void Run(KvCache& cache, int64_t pos0, int64_t n) {
    const std::vector<TokenType> types(n, TokenType::kText);
    std::vector<float> logits;
    for (int64_t p = pos0; p < pos0 + n; p += 16) {
      ForwardInput in;
      in.ids = ids_.data() + p;
      in.types = types.data();
      in.n = std::min<int64_t>(16, pos0 + n - p);
      in.pos0 = p;
      in.pass_end = pos0 + n;
      ASSERT_TRUE(model_->Forward(in, cache, logits).ok());
    }
  }
  // One batched decode step (token ids_[pos[b]] at pos[b]); returns the rows' shared_prefix of each layer, after
  // checking each row's logits against the same step run alone on a copy of its cache.
  std::vector<std::vector<int64_t>> Decode(const std::vector<KvCache*>& caches, const std::vector<int64_t>& pos) {
    std::vector<float> alone, row;
    for (size_t b = 0; b < caches.size(); ++b) {
      auto copy = caches[b]->Copy(be_, pos[b], pos[b]);
      EXPECT_TRUE(copy.ok());
      const int32_t id = ids_[pos[b]];
      const TokenType type = TokenType::kText;
      ForwardInput in;
      in.ids = &id;
      in.types = &type;
      in.n = 1;
      in.pos0 = pos[b];
      EXPECT_TRUE(model_->Forward(in, *copy, row).ok());
      alone.insert(alone.end(), row.begin(), row.end());
    }
    be_.shared.clear();
    std::vector<int32_t> ids;
    for (int64_t p : pos) ids.push_back(ids_[p]);
    std::vector<float> batched;
    EXPECT_TRUE(model_->DecodeBatch(ids, pos, caches, batched).ok());
    EXPECT_EQ(batched.size(), alone.size());
    float worst = 0.0f;
    for (size_t i = 0; i < std::min(batched.size(), alone.size()); ++i) {
      worst = std::max(worst, std::abs(batched[i] - alone[i]));
    }
    EXPECT_LT(worst, 1e-3f) << "batched logits differ from each sequence's alone";
    EXPECT_EQ(be_.false_claims, 0);
    return be_.shared;
  }
  // The shared_prefix every layer should see (sliding ones too: the backend checks what their rings hold).
  std::vector<std::vector<int64_t>> Expected(const std::vector<int64_t>& shared) const {
    return std::vector<std::vector<int64_t>>(model_->config().layers.size(), shared);
  }

  RecordingCpu be_;
  std::unique_ptr<Gemma4Model> model_;
  std::vector<int32_t> ids_;
};

TEST_F(SharedPrefixTest, ForksOfOneSnapshotShareItOnEveryLayer) {
  size_t full = 0, sliding = 0;
  for (const LayerConfig& l : model_->config().layers) ++(l.sliding ? sliding : full);
  ASSERT_GT(full, 0u);
  ASSERT_GT(sliding, 0u);
  KvCache root = NewCache();
  Run(root, 0, 32);  // an aligned snapshot: all of it final
  std::vector<KvCache> forks;
  for (int i = 0; i < 3; ++i) forks.push_back(*root.Copy(be_, 32, 32));
  EXPECT_EQ(Decode({&forks[0], &forks[1], &forks[2]}, {32, 32, 32}), Expected({0, 32, 32}));
  // A step later each fork wrote its own position 32: the snapshot is still what they share.
  EXPECT_EQ(Decode({&forks[0], &forks[1], &forks[2], &root}, {33, 33, 33, 32}), Expected({0, 32, 32, 32}));
}

TEST_F(SharedPrefixTest, UnrelatedCachesAndOtherLineagesShareNothing) {
  KvCache root = NewCache(), other = NewCache();
  Run(root, 0, 32);
  Run(other, 0, 32);  // the same tokens, but not a fork: nothing is claimed
  KvCache a = *root.Copy(be_, 32, 32), b = *root.Copy(be_, 32, 32);
  EXPECT_EQ(Decode({&other, &a, &b}, {32, 32, 32}), Expected({0, 0, 0}));
  EXPECT_EQ(Decode({&a, &other, &b}, {33, 33, 33}), Expected({0, 0, 32}));
}

TEST_F(SharedPrefixTest, ForksAtDifferentLengthsAndForksOfForksShareTheCommonFinalPrefix) {
  KvCache root = NewCache();
  Run(root, 0, 20);
  // As Sequence::Fork on a backend whose rounding depends on the step end: positions [16, 20) are a provisional
  // tail, recomputed by the next prefill, so only [0, 16) is final.
  KvCache a = *root.Copy(be_, 16, 20), b = *root.Copy(be_, 16, 20);
  Run(a, 20, 4);                       // a goes on alone to 24
  KvCache d = *a.Copy(be_, 24, 24);    // a fork of a fork
  Run(root, 16, 16);                   // the root goes on to 32, its tail [16, 20) recomputed in this pass
  KvCache late = *root.Copy(be_, 32, 32);  // a later fork of the root
  EXPECT_EQ(Decode({&b, &a, &d, &late, &root}, {20, 24, 24, 32, 32}), Expected({0, 16, 16, 16, 16}));
  EXPECT_EQ(Decode({&root, &late, &d}, {33, 33, 25}), Expected({0, 32, 16}));
  // d copied a up to 24 but counts only what it holds of the lineage: an undercount, never more than is true.
  EXPECT_EQ(Decode({&a, &d}, {25, 26}), Expected({0, 16}));
}

}  // namespace
}  // namespace avserve::engine
