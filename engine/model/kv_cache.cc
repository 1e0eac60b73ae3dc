#include "engine/model/kv_cache.h"

#include <algorithm>

#include "engine/base/status_macros.h"

namespace avserve::engine {

absl::StatusOr<KvCache> KvCache::Create(Backend& backend, const ModelConfig& config, DType dtype,
                                        int64_t max_tokens, int64_t max_chunk) {
  if (max_tokens <= 0) return absl::InvalidArgumentError("KV cache needs max_tokens > 0");
  KvCache cache;
  cache.max_tokens_ = max_tokens;
  cache.lineage_ = std::make_shared<const int>(0);
  cache.lineage_len_ = max_tokens;
  for (const LayerConfig& l : config.layers) {
    const int64_t cap =
        l.sliding ? std::min<int64_t>(max_tokens, config.sliding_window - 1 + max_chunk) : max_tokens;
    const size_t bytes = static_cast<size_t>(cap) * l.num_kv_heads * l.head_dim * DTypeSize(dtype);
    Layer layer;
    layer.full = !l.sliding;
    ASSIGN_OR_RETURN(layer.k_buf, layer.full ? backend.AllocateShareable(bytes) : backend.Allocate(bytes));
    ASSIGN_OR_RETURN(layer.v_buf, layer.full ? backend.AllocateShareable(bytes) : backend.Allocate(bytes));
    layer.k = layer.k_buf->View(dtype, {cap, l.num_kv_heads, l.head_dim});
    layer.v = layer.v_buf->View(dtype, {cap, l.num_kv_heads, l.head_dim});
    cache.bytes_ += 2 * bytes;
    cache.layers_.push_back(std::move(layer));
  }
  return cache;
}

absl::StatusOr<KvCache> KvCache::Copy(Backend& backend, int64_t stable, int64_t length) const {
  length = std::clamp<int64_t>(length, 0, max_tokens_);
  stable = std::clamp<int64_t>(stable, 0, length);
  KvCache copy;
  copy.max_tokens_ = max_tokens_;
  copy.bytes_ = bytes_;
  copy.lineage_ = lineage_;
  copy.lineage_len_ = std::min(lineage_len_, stable);
  for (const Layer& l : layers_) {
    Layer c;
    c.full = l.full;
    if (l.full) {  // row p holds position p: the first `stable` rows are final
      const size_t prefix = static_cast<size_t>(std::min(stable, l.k.dim(0))) * (l.k.bytes() / l.k.dim(0));
      ASSIGN_OR_RETURN(c.k_buf, backend.ForkBuffer(*l.k_buf, prefix));
      ASSIGN_OR_RETURN(c.v_buf, backend.ForkBuffer(*l.v_buf, prefix));
    } else {
      ASSIGN_OR_RETURN(c.k_buf, backend.Allocate(l.k.bytes()));
      ASSIGN_OR_RETURN(c.v_buf, backend.Allocate(l.v.bytes()));
    }
    c.k = c.k_buf->View(l.k.dtype, {l.k.dim(0), l.k.dim(1), l.k.dim(2)});
    c.v = c.v_buf->View(l.v.dtype, {l.v.dim(0), l.v.dim(1), l.v.dim(2)});
    if (!l.full) {
      backend.Convert(l.k, c.k);
      backend.Convert(l.v, c.v);
    } else if (length > stable) {
      backend.Convert(l.k.Slice(stable, length), c.k.Slice(stable, length));
      backend.Convert(l.v.Slice(stable, length), c.v.Slice(stable, length));
    }
    copy.layers_.push_back(std::move(c));
  }
  return copy;
}

int64_t KvCache::SharedWith(const KvCache& other) const {
  if (lineage_ == nullptr || lineage_ != other.lineage_) return 0;
  return std::min(lineage_len_, other.lineage_len_);
}

}  // namespace avserve::engine
