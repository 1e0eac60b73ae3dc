#include "engine/backend/op_timer.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace avserve::engine {
namespace {

using Clock = std::chrono::steady_clock;

std::string Shape(const Tensor& t) {
  std::string s = "[";
  for (int i = 0; i < t.rank; ++i) absl::StrAppend(&s, i ? "," : "", t.shape[i]);
  return s + "]";
}

class OpTimer final : public Backend {
  struct Row {
    int64_t calls = 0;
    double seconds = 0;
  };

  template <typename F>
  auto Time(const std::string& key, F&& op) {
    if (sync_) in_->Synchronize();
    const auto t0 = Clock::now();
    auto result = op();
    if (sync_) in_->Synchronize();
    Row& r = rows_[key];
    ++r.calls;
    r.seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    return result;
  }

 public:
  OpTimer(std::unique_ptr<Backend> inner, bool sync) : in_(std::move(inner)), sync_(sync) {}
  ~OpTimer() override { Print(); }

  std::string Name() const override { return in_->Name(); }
  Device device() const override { return in_->device(); }
  bool SharesHostMemory() const override { return in_->SharesHostMemory(); }
  bool RoundingDependsOnStepEnd() const override { return in_->RoundingDependsOnStepEnd(); }
  absl::StatusOr<std::unique_ptr<Buffer>> Allocate(size_t bytes) override {
    return Time("Allocate", [&] { return in_->Allocate(bytes); });
  }
  absl::Status Upload(const void* host, size_t bytes, const Tensor& dst) override {
    return Time("Upload", [&] { return in_->Upload(host, bytes, dst); });
  }
  absl::Status Download(const Tensor& src, void* host, size_t bytes) override {
    return Time(absl::StrCat("Download ", bytes), [&] { return in_->Download(src, host, bytes); });
  }
  void Synchronize() override { in_->Synchronize(); }

  void MatMul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) override {
    Time(absl::StrCat("MatMul ", Shape(x), "x", Shape(w)), [&] { in_->MatMul(x, w, bias, y); return 0; });
  }
  void RmsNorm(const Tensor& x, const Tensor* weight, float eps, const Tensor& y) override {
    Time(absl::StrCat("RmsNorm ", Shape(x)), [&] { in_->RmsNorm(x, weight, eps, y); return 0; });
  }
  void RmsNormRope(const Tensor& x, const Tensor& weight, float eps, const Tensor& positions, const RopeParams& rope,
                   const Tensor& y) override {
    Time(absl::StrCat("RmsNormRope ", Shape(x)), [&] {
      in_->RmsNormRope(x, weight, eps, positions, rope, y);
      return 0;
    });
  }
  void RmsNormAddTo(const Tensor& x, const Tensor& weight, float eps, const Tensor& residual, bool scaled,
                    float scale) override {
    Time(absl::StrCat("RmsNormAddTo ", Shape(x)), [&] {
      in_->RmsNormAddTo(x, weight, eps, residual, scaled, scale);
      return 0;
    });
  }
  void RmsNormAddToNorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& residual, bool scaled,
                        float scale, const Tensor& next_weight, const Tensor& next_out) override {
    Time(absl::StrCat("RmsNormAddToNorm ", Shape(x)), [&] {
      in_->RmsNormAddToNorm(x, weight, eps, residual, scaled, scale, next_weight, next_out);
      return 0;
    });
  }
  void MatMulGeluTanhMul(const Tensor& x, const Tensor& w, const Tensor& gate_up, const Tensor& h) override {
    Time(absl::StrCat("MatMulGeluTanhMul ", Shape(x), "x", Shape(w)), [&] {
      in_->MatMulGeluTanhMul(x, w, gate_up, h);
      return 0;
    });
  }
  void QkvNorms(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& q_weight, const Tensor& k_weight,
                float eps, const Tensor& positions, const RopeParams& rope, const Tensor& q_out, const Tensor& k_out,
                const Tensor& v_out) override {
    Time(absl::StrCat("QkvNorms ", Shape(q)), [&] {
      in_->QkvNorms(q, k, v, q_weight, k_weight, eps, positions, rope, q_out, k_out, v_out);
      return 0;
    });
  }
  void AttendDecodeRows(const Tensor& q, const Tensor& k_new, const Tensor& v_new, const std::vector<DecodeKv>& seqs,
                        const Tensor& out) override {
    const bool sliding = !seqs.empty() && seqs[0].params.sliding_window > 0;
    Time(absl::StrCat("AttendDecodeRows q", Shape(q), sliding ? " sliding" : " full"),
         [&] { in_->AttendDecodeRows(q, k_new, v_new, seqs, out); return 0; });
  }
  void NormAppendAttend(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& q_weight,
                        const Tensor& k_weight, float eps, const Tensor& positions, const RopeParams& rope,
                        const Tensor& q_normed, const Tensor& k_cache, const Tensor& v_cache,
                        const AttentionParams& params, const Tensor& out) override {
    Time(absl::StrCat("NormAppendAttend q", Shape(q), params.sliding_window > 0 ? " sliding" : " full"), [&] {
      in_->NormAppendAttend(q, k, v, q_weight, k_weight, eps, positions, rope, q_normed, k_cache, v_cache, params,
                            out);
      return 0;
    });
  }
  void LayerNorm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, const Tensor& y) override {
    Time(absl::StrCat("LayerNorm ", Shape(x)), [&] { in_->LayerNorm(x, w, b, eps, y); return 0; });
  }
  void Rope(const Tensor& x, const Tensor& positions, const RopeParams& params) override {
    Time(absl::StrCat("Rope ", Shape(x)), [&] { in_->Rope(x, positions, params); return 0; });
  }
  void Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* blocks,
                 const AttentionParams& p, const Tensor& out) override {
    // Keys bucketed to a power of two so a decode run folds into a few rows.
    int64_t keys = 1;
    while (keys < p.kv_pos_end - p.kv_pos_begin) keys *= 2;
    Time(absl::StrCat("Attention q", Shape(q), " keys<=", keys, p.sliding_window ? " sliding" : " full"),
         [&] { in_->Attention(q, k, v, blocks, p, out); return 0; });
  }
  void GeluTanhMul(const Tensor& gate, const Tensor& up, const Tensor& out) override {
    Time(absl::StrCat("GeluTanhMul ", Shape(gate)), [&] { in_->GeluTanhMul(gate, up, out); return 0; });
  }
  void Add(const Tensor& a, const Tensor& b, const Tensor& out) override {
    Time(absl::StrCat("Add ", Shape(a)), [&] { in_->Add(a, b, out); return 0; });
  }
  void Scale(const Tensor& x, float s, const Tensor& out) override {
    Time(absl::StrCat("Scale ", Shape(x)), [&] { in_->Scale(x, s, out); return 0; });
  }
  void Embed(const Tensor& table, const Tensor& ids, float scale, const Tensor& out) override {
    Time(absl::StrCat("Embed ", Shape(out)), [&] { in_->Embed(table, ids, scale, out); return 0; });
  }
  void AddPosition2d(const Tensor& x, const Tensor& table, const Tensor& pos, const Tensor& out) override {
    Time(absl::StrCat("AddPosition2d ", Shape(x)), [&] { in_->AddPosition2d(x, table, pos, out); return 0; });
  }
  void Softcap(const Tensor& x, float cap, const Tensor& out) override {
    Time(absl::StrCat("Softcap ", Shape(x)), [&] { in_->Softcap(x, cap, out); return 0; });
  }
  void Convert(const Tensor& x, const Tensor& out) override {
    Time(absl::StrCat("Convert ", Shape(x)), [&] { in_->Convert(x, out); return 0; });
  }
  void ArgmaxRows(const Tensor& logits, const Tensor& suppressed, const Tensor& out) override {
    Time(absl::StrCat("ArgmaxRows ", Shape(logits)), [&] { in_->ArgmaxRows(logits, suppressed, out); return 0; });
  }
  void CopyRowsToRing(const Tensor& src, const Tensor& dst, int64_t first_pos) override {
    Time(absl::StrCat("CopyRowsToRing ", Shape(src)), [&] { in_->CopyRowsToRing(src, dst, first_pos); return 0; });
  }
  void ScatterRows(const Tensor& src, const Tensor& indices, const Tensor& dst) override {
    Time(absl::StrCat("ScatterRows ", Shape(src)), [&] { in_->ScatterRows(src, indices, dst); return 0; });
  }

 private:
  void Print() const {
    std::vector<std::pair<std::string, Row>> rows(rows_.begin(), rows_.end());
    std::sort(rows.begin(), rows.end(),
              [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
    double total = 0;
    for (const auto& [key, r] : rows) total += r.seconds;
    std::fprintf(stderr, "op times (%s; %s): total %.3f s\n", in_->Name().c_str(),
                 sync_ ? "each op synchronised" : "host time inside each call, no synchronisation", total);
    std::fprintf(stderr, "%10s %9s %11s %6s  %s\n", "seconds", "calls", "us/call", "share", "op");
    for (const auto& [key, r] : rows) {
      if (r.seconds < 1e-3 * total && rows.size() > 30) continue;
      std::fprintf(stderr, "%10.4f %9lld %11.1f %5.1f%%  %s\n", r.seconds, static_cast<long long>(r.calls),
                   1e6 * r.seconds / static_cast<double>(r.calls), 100.0 * r.seconds / total, key.c_str());
    }
  }

  std::unique_ptr<Backend> in_;
  bool sync_;
  std::map<std::string, Row> rows_;
};

}  // namespace

std::unique_ptr<Backend> WrapWithOpTimer(std::unique_ptr<Backend> inner, bool synchronise) {
  return std::make_unique<OpTimer>(std::move(inner), synchronise);
}

}  // namespace avserve::engine
