// Per-sequence K/V storage (design.md §4): sliding layers keep a ring of the last
// (window - 1 + max_chunk) positions, full layers keep every position up to max_tokens.
// Position p of a layer lives in row p % capacity(layer). A step of n positions needs n <= max_chunk():
// its queries see the window - 1 positions before it, which the ring must still hold.
#pragma once

#include <cstdint>
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
  // The cache of a fork (Sequence::Fork) holding positions [0, length), of which [0, stable) will never be
  // written again by either cache. The full layers' rows of those positions may share memory with this cache
  // (Backend::ForkBuffer: one copy of a video's K/V for all the questions forked from it); rows [stable, length)
  // are copied. The copy's sliding rings hold steps of max_chunk positions (0: as many as this cache's; never more;
  // at least length - stable, so that the positions after `stable` can be run again): its last positions are
  // copied into them. A question's fork needs far less ring than a video's prefill steps (Note [Fork rings]).
  absl::StatusOr<KvCache> Copy(Backend& backend, int64_t stable, int64_t length, int64_t max_chunk = 0) const;
  // Makes the sliding rings hold steps of max_chunk positions (nothing when they do already), keeping the ring
  // positions before `length`. On an allocation error the layers already grown stay grown (each ring is whole)
  // and max_chunk() is unchanged.
  absl::Status GrowRings(Backend& backend, int64_t max_chunk, int64_t length);
  // Positions [0, n) that hold the same K/V in both caches because they were copied from one original (0 for
  // unrelated caches); in a sliding layer's ring, only where both rings still hold them. Undercounts between
  // forks of forks; never overcounts.
  int64_t SharedWith(const KvCache& other) const;

  const Tensor& k(int layer) const { return layers_[layer].k; }  // [capacity, kv_heads, D]
  const Tensor& v(int layer) const { return layers_[layer].v; }  // [capacity, kv_heads, D]
  int64_t capacity(int layer) const { return layers_[layer].k.dim(0); }
  int64_t max_tokens() const { return max_tokens_; }
  int64_t max_chunk() const { return max_chunk_; }
  size_t bytes() const { return bytes_; }

 private:
  struct Layer {
    std::unique_ptr<Buffer> k_buf, v_buf;
    Tensor k, v;
    bool full = false;  // a full-attention layer (row p holds position p), else a sliding layer's ring
  };
  // A sliding layer's ring of `rows` rows holding the positions before `length` that both it and l's ring hold.
  static absl::StatusOr<Layer> RingCopy(Backend& backend, const Layer& l, int64_t rows, int64_t length);

  std::vector<Layer> layers_;
  int64_t max_tokens_ = 0;
  int64_t max_chunk_ = 0;
  int64_t window_ = 0;  // sliding_window: a ring of max_chunk steps holds window - 1 + max_chunk positions
  size_t bytes_ = 0;
  // Shared by an original cache and every copy made from it or from its copies; positions [0, lineage_len_) of
  // this cache hold the original's values (the original: all of them).
  std::shared_ptr<const int> lineage_;
  int64_t lineage_len_ = 0;
};

}  // namespace avserve::engine
