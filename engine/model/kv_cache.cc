#include "engine/model/kv_cache.h"

#include <algorithm>

#include "engine/base/status_macros.h"

namespace avserve::engine {

// Note [Fork rings]
// A sliding layer's ring must hold the window - 1 positions before a step plus the step itself, so a sequence
// prefilled in steps of 2,048 positions keeps 3,071 positions of ring per sliding layer: 1.0 GB at the 12B shape,
// where its full layers' share of a video is shared between forks (Backend::ForkBuffer). A question's fork only
// runs its question (tens of positions) and one position per generated token, so Sequence::Fork gives it rings
// for steps of EngineOptions::fork_chunk_tokens, and the first longer step grows them (GrowRings): the question
// forks of one video then cost 0.42 GB each instead of 1.0 GB (steps of 256), and more of them decode together
// before memory runs out (service/model_backend.cc, AnswerTogether). Step sizes and so the numerics stay those
// of the original sequence: a ring is only ever large enough or grown, never a reason to cut a step.
namespace {

int64_t RingCapacity(int64_t window, int64_t max_chunk, int64_t max_tokens) {
  return std::min<int64_t>(max_tokens, window - 1 + max_chunk);
}

// Copies positions [from, to) of ring `src` into ring `dst` (row p % capacity each): at most three runs of
// rows that are contiguous in both.
void CopyRingPositions(Backend& backend, const Tensor& src, const Tensor& dst, int64_t from, int64_t to) {
  const int64_t cs = src.dim(0), cd = dst.dim(0);
  for (int64_t p = from; p < to;) {
    const int64_t rs = p % cs, rd = p % cd, n = std::min({to - p, cs - rs, cd - rd});
    backend.Convert(src.Slice(rs, rs + n), dst.Slice(rd, rd + n));
    p += n;
  }
}

}  // namespace

absl::StatusOr<KvCache> KvCache::Create(Backend& backend, const ModelConfig& config, DType dtype,
                                        int64_t max_tokens, int64_t max_chunk) {
  if (max_tokens <= 0) return absl::InvalidArgumentError("KV cache needs max_tokens > 0");
  KvCache cache;
  if (max_chunk <= 0) return absl::InvalidArgumentError("KV cache needs max_chunk > 0");
  cache.max_tokens_ = max_tokens;
  cache.max_chunk_ = max_chunk;
  cache.window_ = config.sliding_window;
  cache.lineage_ = std::make_shared<const int>(0);
  cache.lineage_len_ = max_tokens;
  for (const LayerConfig& l : config.layers) {
    const int64_t cap = l.sliding ? RingCapacity(config.sliding_window, max_chunk, max_tokens) : max_tokens;
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

absl::StatusOr<KvCache::Layer> KvCache::RingCopy(Backend& backend, const Layer& l, int64_t rows, int64_t length) {
  const size_t bytes = static_cast<size_t>(rows) * (l.k.bytes() / l.k.dim(0));
  Layer c;
  ASSIGN_OR_RETURN(c.k_buf, backend.Allocate(bytes));
  ASSIGN_OR_RETURN(c.v_buf, backend.Allocate(bytes));
  c.k = c.k_buf->View(l.k.dtype, {rows, l.k.dim(1), l.k.dim(2)});
  c.v = c.v_buf->View(l.v.dtype, {rows, l.v.dim(1), l.v.dim(2)});
  const int64_t from = std::max<int64_t>(0, length - std::min(rows, l.k.dim(0)));
  CopyRingPositions(backend, l.k, c.k, from, length);
  CopyRingPositions(backend, l.v, c.v, from, length);
  return c;
}

absl::StatusOr<KvCache> KvCache::Copy(Backend& backend, int64_t stable, int64_t length, int64_t max_chunk) const {
  length = std::clamp<int64_t>(length, 0, max_tokens_);
  stable = std::clamp<int64_t>(stable, 0, length);
  max_chunk = max_chunk > 0 ? std::min(std::max(max_chunk, length - stable), max_chunk_) : max_chunk_;
  KvCache copy;
  copy.max_tokens_ = max_tokens_;
  copy.max_chunk_ = std::max<int64_t>(max_chunk, 1);
  copy.window_ = window_;
  copy.lineage_ = lineage_;
  copy.lineage_len_ = std::min(lineage_len_, stable);
  for (const Layer& l : layers_) {
    Layer c;
    if (l.full) {  // row p holds position p: the first `stable` rows are final
      const int64_t rows = l.k.dim(0);
      const size_t prefix = static_cast<size_t>(std::min(stable, rows)) * (l.k.bytes() / rows);
      ASSIGN_OR_RETURN(c.k_buf, backend.ForkBuffer(*l.k_buf, prefix));
      ASSIGN_OR_RETURN(c.v_buf, backend.ForkBuffer(*l.v_buf, prefix));
      c.k = c.k_buf->View(l.k.dtype, {rows, l.k.dim(1), l.k.dim(2)});
      c.v = c.v_buf->View(l.v.dtype, {rows, l.v.dim(1), l.v.dim(2)});
      c.full = true;
      if (length > stable) {
        backend.Convert(l.k.Slice(stable, length), c.k.Slice(stable, length));
        backend.Convert(l.v.Slice(stable, length), c.v.Slice(stable, length));
      }
    } else {  // the ring positions the copy can hold
      ASSIGN_OR_RETURN(c, RingCopy(backend, l, RingCapacity(window_, copy.max_chunk_, max_tokens_), length));
    }
    copy.bytes_ += c.k.bytes() + c.v.bytes();
    copy.layers_.push_back(std::move(c));
  }
  return copy;
}

absl::Status KvCache::GrowRings(Backend& backend, int64_t max_chunk, int64_t length) {
  if (max_chunk <= max_chunk_) return absl::OkStatus();
  length = std::clamp<int64_t>(length, 0, max_tokens_);
  const int64_t rows = RingCapacity(window_, max_chunk, max_tokens_);
  for (Layer& l : layers_) {
    if (l.full || l.k.dim(0) >= rows) continue;
    ASSIGN_OR_RETURN(Layer grown, RingCopy(backend, l, rows, length));
    bytes_ += grown.k.bytes() + grown.v.bytes() - l.k.bytes() - l.v.bytes();
    l = std::move(grown);  // the old ring goes back once the copies are queued (ops run in order)
  }
  max_chunk_ = max_chunk;
  return absl::OkStatus();
}

int64_t KvCache::SharedWith(const KvCache& other) const {
  if (lineage_ == nullptr || lineage_ != other.lineage_) return 0;
  return std::min(lineage_len_, other.lineage_len_);
}

}  // namespace avserve::engine
