// Gemma4Model's side of recorded op runs (Backend::BeginGraph / EndGraph; the CUDA backend's decode graphs,
// Note [Decode graphs] in engine/backend/cuda/cuda_backend.cc), checked on the CPU. A deferring backend does what
// a graph does to the ops: between BeginGraph and EndGraph it queues them and runs them at EndGraph, or drops them
// when told to fail the record, and it keeps freed buffers alive until the queue has run. So a decode step whose
// model code read or wrote anything on the host inside a record, or relied on ops having run before EndGraph,
// would differ from the same step on the plain CPU backend.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/base/status_macros.h"
#include "engine/model/config.h"
#include "engine/model/gemma4.h"
#include "engine/model/kv_cache.h"
#include "engine/model/weights.h"
#include "tests/engine/forwarding_backend.h"
#include "tests/engine/golden.h"
#include "tests/engine/model_steps.h"

namespace avserve::engine {
namespace {

class DeferringCpu;

// A buffer of the inner backend that goes to the graveyard instead of away while a record is open (its ops have
// not run yet).
class HeldBuffer final : public Buffer {
 public:
  HeldBuffer(std::unique_ptr<Buffer> inner, DeferringCpu* owner) : inner_(std::move(inner)), owner_(owner) {}
  ~HeldBuffer() override;
  void* data() const override { return inner_->data(); }
  size_t bytes() const override { return inner_->bytes(); }
  Device device() const override { return inner_->device(); }

 private:
  std::unique_ptr<Buffer> inner_;
  DeferringCpu* owner_;
};

class DeferringCpu final : public testing::ForwardingBackend {
 public:
  struct Record {
    int64_t key = 0;
    int attentions = 0;  // Attention calls queued in it: one a layer and sequence
    bool ended = false, cancelled = false;
  };
  std::vector<Record> records;
  int host_calls_in_record = 0;   // Upload / Download / Synchronize between BeginGraph and EndGraph
  int products_run = 0;           // MatMul calls that ran
  bool fail_records = false;      // EndGraph drops the queued ops and reports that nothing ran
  int fail_allocations_after = -1;  // inside a record, Allocate fails after this many (-1: never)

  std::string Name() const override { return "cpu-deferring"; }

  void BeginGraph(int64_t key) override {
    ASSERT_FALSE(open_) << "nested record";
    open_ = true;
    allocations_ = 0;
    records.push_back({key});
  }
  absl::StatusOr<bool> EndGraph() override {
    EXPECT_TRUE(open_);
    open_ = false;
    records.back().ended = true;
    std::vector<std::function<void()>> ops;
    ops.swap(queue_);
    const bool run = !fail_records;
    if (run) {
      for (auto& op : ops) op();
    }
    graveyard_.clear();
    return run;
  }
  void CancelGraph() override {
    EXPECT_TRUE(open_);
    open_ = false;
    records.back().cancelled = true;
    queue_.clear();
    graveyard_.clear();
  }

  absl::StatusOr<std::unique_ptr<Buffer>> Allocate(size_t bytes) override {
    if (open_ && fail_allocations_after >= 0 && allocations_++ >= fail_allocations_after) {
      return absl::ResourceExhaustedError("test: no memory inside the record");
    }
    ASSIGN_OR_RETURN(std::unique_ptr<Buffer> b, inner().Allocate(bytes));
    return std::unique_ptr<Buffer>(new HeldBuffer(std::move(b), this));
  }
  void Keep(std::unique_ptr<Buffer> b) {
    if (open_) graveyard_.push_back(std::move(b));
  }

  absl::Status Upload(const void* host, size_t bytes, const Tensor& dst) override {
    host_calls_in_record += open_;
    return inner().Upload(host, bytes, dst);
  }
  absl::Status Download(const Tensor& src, void* host, size_t bytes) override {
    host_calls_in_record += open_;
    return inner().Download(src, host, bytes);
  }
  void Synchronize() override {
    host_calls_in_record += open_;
    inner().Synchronize();
  }

  // Every op the model runs in a layer (the fused ones fall back to these), queued while a record is open.
  void MatMul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) override {
    const std::optional<Tensor> b = bias ? std::optional<Tensor>(*bias) : std::nullopt;
    Do([=, this] {
      ++products_run;
      inner().MatMul(x, w, b ? &*b : nullptr, y);
    });
  }
  void RmsNorm(const Tensor& x, const Tensor* weight, float eps, const Tensor& y) override {
    const std::optional<Tensor> wt = weight ? std::optional<Tensor>(*weight) : std::nullopt;
    Do([=, this] { inner().RmsNorm(x, wt ? &*wt : nullptr, eps, y); });
  }
  void Rope(const Tensor& x, const Tensor& positions, const RopeParams& p) override {
    Do([=, this] { inner().Rope(x, positions, p); });
  }
  void Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* blocks, const AttentionParams& p,
                 const Tensor& out) override {
    if (open_) ++records.back().attentions;
    const std::optional<Tensor> bl = blocks ? std::optional<Tensor>(*blocks) : std::nullopt;
    Do([=, this] { inner().Attention(q, k, v, bl ? &*bl : nullptr, p, out); });
  }
  void GeluTanhMul(const Tensor& g, const Tensor& u, const Tensor& out) override {
    Do([=, this] { inner().GeluTanhMul(g, u, out); });
  }
  void Add(const Tensor& a, const Tensor& b, const Tensor& out) override {
    Do([=, this] { inner().Add(a, b, out); });
  }
  void Scale(const Tensor& x, float s, const Tensor& out) override { Do([=, this] { inner().Scale(x, s, out); }); }
  void Softcap(const Tensor& x, float cap, const Tensor& out) override {
    Do([=, this] { inner().Softcap(x, cap, out); });
  }
  void Convert(const Tensor& x, const Tensor& out) override { Do([=, this] { inner().Convert(x, out); }); }
  void CopyRowsToRing(const Tensor& src, const Tensor& dst, int64_t first_pos) override {
    Do([=, this] { inner().CopyRowsToRing(src, dst, first_pos); });
  }

 private:
  void Do(std::function<void()> op) {
    if (open_) {
      queue_.push_back(std::move(op));
    } else {
      op();
    }
  }

  bool open_ = false;
  int allocations_ = 0;
  std::vector<std::function<void()>> queue_;
  std::vector<std::unique_ptr<Buffer>> graveyard_;
};

HeldBuffer::~HeldBuffer() { owner_->Keep(std::move(inner_)); }

class GraphRunsTest : public ::testing::Test {
 protected:
  // A model on `backend`; the same weights each time.
  static std::unique_ptr<Gemma4Model> Model(Backend& backend) {
    const std::string dir = testing::TinyBf16();
    auto config = LoadModelConfig(dir);
    EXPECT_TRUE(config.ok()) << config.status();
    if (!config.ok()) return nullptr;
    auto weights = LoadWeights(dir, *config, backend);
    EXPECT_TRUE(weights.ok()) << weights.status();
    if (!weights.ok()) return nullptr;
    return std::make_unique<Gemma4Model>(backend, *config, *std::move(weights), /*vision_blocks_all_layers=*/false);
  }

  // A 20-token prefill (two steps, then a 3-token one), 12 single-sequence decode steps, then 6 steps of the
  // sequence and two forks of it together: every step's logits, in order.
  static absl::StatusOr<std::vector<float>> Steps(Backend& backend, Gemma4Model& model) {
    std::mt19937 rng(5);
    std::vector<int32_t> ids(64);
    for (int32_t& id : ids) id = 3 + static_cast<int32_t>(rng() % 400);
    ASSIGN_OR_RETURN(KvCache a, KvCache::Create(backend, model.config(), model.act_dtype(), 64, 16));
    std::vector<float> all, logits;
    const auto forward = [&](int64_t pos0, int64_t n) { return testing::ForwardText(model, a, ids, pos0, n, all); };
    RETURN_IF_ERROR(forward(0, 10));
    RETURN_IF_ERROR(forward(10, 7));
    RETURN_IF_ERROR(forward(17, 3));
    for (int64_t pos = 20; pos < 32; ++pos) RETURN_IF_ERROR(forward(pos, 1));
    ASSIGN_OR_RETURN(KvCache b, a.Copy(backend, 32, 32));
    ASSIGN_OR_RETURN(KvCache c, a.Copy(backend, 32, 32));
    for (int64_t pos = 32; pos < 38; ++pos) {
      RETURN_IF_ERROR(model.DecodeBatch({ids[pos], ids[pos + 1], ids[pos + 2]}, {pos, pos, pos}, {&a, &b, &c}, logits));
      all.insert(all.end(), logits.begin(), logits.end());
    }
    return all;
  }

  static std::vector<float> Plain() {
    auto cpu = CreateCpuBackend(2);
    auto model = Model(*cpu);
    if (model == nullptr) return {};
    auto logits = Steps(*cpu, *model);
    EXPECT_TRUE(logits.ok()) << logits.status();
    return logits.ok() ? *std::move(logits) : std::vector<float>();
  }

  static size_t Differing(const std::vector<float>& a, const std::vector<float>& b) {
    size_t n = a.size() == b.size() ? 0 : std::max(a.size(), b.size());
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) n += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return n;
  }
};

TEST_F(GraphRunsTest, DecodeStepsAreRecordedInRunsThatDoubleAfterAPlainFirstLayer) {
  DeferringCpu be;
  auto model = Model(be);
  ASSERT_NE(model, nullptr);
  ASSERT_EQ(model->config().layers.size(), 4u);  // runs: layer 0 plain, then 1 and 2-3
  auto logits = Steps(be, *model);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const std::vector<float> plain = Plain();
  ASSERT_FALSE(plain.empty());
  EXPECT_EQ(Differing(*logits, plain), 0u) << "deferred runs of layers give other logits than plain ops";
  EXPECT_EQ(be.host_calls_in_record, 0);
  // Prefill steps (10, 7 and 3 tokens) record nothing; each of the 12 + 6 decode steps records two runs.
  ASSERT_EQ(be.records.size(), 2u * (12 + 6));
  for (size_t i = 0; i < be.records.size(); i += 2) {
    const DeferringCpu::Record &one = be.records[i], &two = be.records[i + 1];
    EXPECT_TRUE(one.ended && two.ended && !one.cancelled && !two.cancelled);
    const int seqs = i < 24 ? 1 : 3;
    EXPECT_EQ(one.attentions, seqs) << "the first run holds layer 1";
    EXPECT_EQ(two.attentions, 2 * seqs) << "the second run holds layers 2 and 3";
    EXPECT_NE(one.key, two.key);
    // The same run of the same batch size comes back under the same key (its graph is updated in place); a new
    // batch size gets keys of its own.
    const size_t same = i < 24 ? 0 : 24;
    EXPECT_EQ(one.key, be.records[same].key);
    EXPECT_EQ(two.key, be.records[same + 1].key);
  }
  EXPECT_NE(be.records[0].key, be.records[24].key);
  EXPECT_NE(be.records[1].key, be.records[25].key);
}

TEST_F(GraphRunsTest, ARecordThatRanNothingIsRunPlainly) {
  DeferringCpu be;
  be.fail_records = true;
  auto model = Model(be);
  ASSERT_NE(model, nullptr);
  auto logits = Steps(be, *model);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_EQ(Differing(*logits, Plain()), 0u);
  EXPECT_EQ(be.records.size(), 2u * (12 + 6));
  // Every product ran exactly once: none of the dropped records', all of their plain reruns'.
  DeferringCpu counted;
  auto again = Model(counted);
  ASSERT_NE(again, nullptr);
  ASSERT_TRUE(Steps(counted, *again).ok());
  EXPECT_EQ(be.products_run, counted.products_run);
}

TEST_F(GraphRunsTest, AnErrorInsideARecordCancelsItAndIsReturned) {
  DeferringCpu be;
  auto model = Model(be);
  ASSERT_NE(model, nullptr);
  auto cache = KvCache::Create(be, model->config(), model->act_dtype(), 64, 16);
  ASSERT_TRUE(cache.ok());
  const std::vector<int32_t> ids = {5, 6, 7, 8};
  const std::vector<TokenType> types(ids.size(), TokenType::kText);
  std::vector<float> logits;
  ForwardInput in;
  in.ids = ids.data();
  in.types = types.data();
  in.n = 3;
  ASSERT_TRUE(model->Forward(in, *cache, logits).ok());
  be.fail_allocations_after = 2;  // the third allocation inside a record fails
  in.ids = ids.data() + 3;
  in.n = 1;
  in.pos0 = 3;
  const absl::Status st = model->Forward(in, *cache, logits);
  EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
  ASSERT_EQ(be.records.size(), 1u);
  EXPECT_TRUE(be.records[0].cancelled);
  EXPECT_FALSE(be.records[0].ended);
}

}  // namespace
}  // namespace avserve::engine
