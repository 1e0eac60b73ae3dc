#include "engine/model/kv_cache.h"

#include <algorithm>

#include "engine/base/status_macros.h"

namespace avserve::engine {

absl::StatusOr<KvCache> KvCache::Create(Backend& backend, const ModelConfig& config, DType dtype,
                                        int64_t max_tokens, int64_t max_chunk) {
  if (max_tokens <= 0) return absl::InvalidArgumentError("KV cache needs max_tokens > 0");
  KvCache cache;
  cache.max_tokens_ = max_tokens;
  for (const LayerConfig& l : config.layers) {
    const int64_t cap =
        l.sliding ? std::min<int64_t>(max_tokens, config.sliding_window - 1 + max_chunk) : max_tokens;
    const size_t bytes = static_cast<size_t>(cap) * l.num_kv_heads * l.head_dim * DTypeSize(dtype);
    Layer layer;
    ASSIGN_OR_RETURN(layer.k_buf, backend.Allocate(bytes));
    ASSIGN_OR_RETURN(layer.v_buf, backend.Allocate(bytes));
    layer.k = layer.k_buf->View(dtype, {cap, l.num_kv_heads, l.head_dim});
    layer.v = layer.v_buf->View(dtype, {cap, l.num_kv_heads, l.head_dim});
    cache.bytes_ += 2 * bytes;
    cache.layers_.push_back(std::move(layer));
  }
  return cache;
}

absl::StatusOr<KvCache> KvCache::Copy(Backend& backend) const {
  KvCache copy;
  copy.max_tokens_ = max_tokens_;
  copy.bytes_ = bytes_;
  for (const Layer& l : layers_) {
    Layer c;
    ASSIGN_OR_RETURN(c.k_buf, backend.Allocate(l.k.bytes()));
    ASSIGN_OR_RETURN(c.v_buf, backend.Allocate(l.v.bytes()));
    c.k = c.k_buf->View(l.k.dtype, {l.k.dim(0), l.k.dim(1), l.k.dim(2)});
    c.v = c.v_buf->View(l.v.dtype, {l.v.dim(0), l.v.dim(1), l.v.dim(2)});
    backend.Convert(l.k, c.k);
    backend.Convert(l.v, c.v);
    copy.layers_.push_back(std::move(c));
  }
  return copy;
}

}  // namespace avserve::engine
