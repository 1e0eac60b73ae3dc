// Per-sequence K/V storage (design.md §4): sliding layers keep a ring of the last
// (window - 1 + max_chunk) positions, full layers keep every position up to max_tokens.
// Position p of a layer lives in row p % capacity(layer).
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/model/config.h"

namespace avserve::engine {

class KvCache {
 public:
  static absl::StatusOr<KvCache> Create(Backend& backend, const ModelConfig& config, DType dtype,
                                        int64_t max_tokens, int64_t max_chunk);
  // A deep copy (Sequence::Fork).
  absl::StatusOr<KvCache> Copy(Backend& backend) const;

  const Tensor& k(int layer) const { return layers_[layer].k; }  // [capacity, kv_heads, D]
  const Tensor& v(int layer) const { return layers_[layer].v; }  // [capacity, kv_heads, D]
  int64_t capacity(int layer) const { return layers_[layer].k.dim(0); }
  int64_t max_tokens() const { return max_tokens_; }
  size_t bytes() const { return bytes_; }

 private:
  struct Layer {
    std::unique_ptr<Buffer> k_buf, v_buf;
    Tensor k, v;
  };
  std::vector<Layer> layers_;
  int64_t max_tokens_ = 0;
  size_t bytes_ = 0;
};

}  // namespace avserve::engine
