// A Backend that hands every required op to another backend (the CPU reference, by default). Tests derive from
// it to change one behaviour (a device-style memory layout, recording what the model asks for) and keep the rest.
// The fused sequences are not forwarded: they run Backend's defaults over the forwarded plain ops unless a test
// forwards them itself.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "engine/backend/backend.h"

namespace avserve::engine::testing {

class ForwardingBackend : public Backend {
 public:
  explicit ForwardingBackend(std::unique_ptr<Backend> inner = CreateCpuBackend(2)) : inner_(std::move(inner)) {}

  std::string Name() const override { return inner_->Name(); }
  Device device() const override { return inner_->device(); }
  bool SharesHostMemory() const override { return inner_->SharesHostMemory(); }
  absl::StatusOr<std::unique_ptr<Buffer>> Allocate(size_t bytes) override { return inner_->Allocate(bytes); }
  absl::Status Upload(const void* host, size_t bytes, const Tensor& dst) override {
    return inner_->Upload(host, bytes, dst);
  }
  absl::Status Download(const Tensor& src, void* host, size_t bytes) override {
    return inner_->Download(src, host, bytes);
  }
  void Synchronize() override { inner_->Synchronize(); }
  void MatMul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) override {
    inner_->MatMul(x, w, bias, y);
  }
  void RmsNorm(const Tensor& x, const Tensor* weight, float eps, const Tensor& y) override {
    inner_->RmsNorm(x, weight, eps, y);
  }
  void LayerNorm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, const Tensor& y) override {
    inner_->LayerNorm(x, w, b, eps, y);
  }
  void Rope(const Tensor& x, const Tensor& positions, const RopeParams& p) override { inner_->Rope(x, positions, p); }
  void Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* blocks, const AttentionParams& p,
                 const Tensor& out) override {
    inner_->Attention(q, k, v, blocks, p, out);
  }
  void GeluTanhMul(const Tensor& g, const Tensor& u, const Tensor& out) override { inner_->GeluTanhMul(g, u, out); }
  void Add(const Tensor& a, const Tensor& b, const Tensor& out) override { inner_->Add(a, b, out); }
  void Scale(const Tensor& x, float s, const Tensor& out) override { inner_->Scale(x, s, out); }
  void Embed(const Tensor& t, const Tensor& ids, float s, const Tensor& out) override {
    inner_->Embed(t, ids, s, out);
  }
  void AddPosition2d(const Tensor& x, const Tensor& t, const Tensor& p, const Tensor& out) override {
    inner_->AddPosition2d(x, t, p, out);
  }
  void Softcap(const Tensor& x, float cap, const Tensor& out) override { inner_->Softcap(x, cap, out); }
  void Convert(const Tensor& x, const Tensor& out) override { inner_->Convert(x, out); }
  void ArgmaxRows(const Tensor& logits, const Tensor& suppressed, const Tensor& out) override {
    inner_->ArgmaxRows(logits, suppressed, out);
  }
  void CopyRowsToRing(const Tensor& src, const Tensor& dst, int64_t first_pos) override {
    inner_->CopyRowsToRing(src, dst, first_pos);
  }
  void ScatterRows(const Tensor& src, const Tensor& idx, const Tensor& dst) override {
    inner_->ScatterRows(src, idx, dst);
  }

 protected:
  Backend& inner() { return *inner_; }
  const Backend& inner() const { return *inner_; }

 private:
  std::unique_ptr<Backend> inner_;
};

}  // namespace avserve::engine::testing
