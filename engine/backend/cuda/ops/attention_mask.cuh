// The visibility predicate of spec §5.5, shared by the attention kernels (device code only).
#pragma once

#include "engine/backend/cuda/ops/attention.cuh"

namespace avserve::engine::cuda {

__device__ __forceinline__ int BlockIdAt(const AttentionParams& p, int pos) {
  if (p.block_ids == nullptr) return -1;
  const int i = pos - p.block_pos0;
  return (i >= 0 && i < p.block_len) ? p.block_ids[i] : -1;
}

// Whether the query at absolute position qpos (block bq) sees the key at kpos (block bk).
__device__ __forceinline__ bool Allowed(const AttentionParams& p, int qpos, int kpos, int bq, int bk) {
  if (kpos < p.kv_begin || kpos >= p.kv_end) return false;
  const bool in_window = p.window <= 0 || kpos > qpos - p.window;
  const bool same_block = bq >= 0 && bq == bk;
  if (p.block_overrides_window) return (in_window && kpos <= qpos) || same_block;
  return in_window && (kpos <= qpos || same_block);
}

}  // namespace avserve::engine::cuda
