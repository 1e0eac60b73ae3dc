// The visibility predicate of spec §5.5 and the tile geometry shared by the prefill attention kernels (device
// code only).
#pragma once

#include "engine/backend/cuda/ops/attention.cuh"
#include "engine/backend/cuda/ops/device_utils.cuh"

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

// Key range [lo, hi) that any row of the tile can see.
__device__ inline void TileKeyRange(const AttentionParams& p, int qp_min, int qp_max, int* lo, int* hi) {
  int k_lo = p.kv_begin;
  if (p.window > 0) k_lo = max(k_lo, qp_min - p.window + 1);
  int k_hi = qp_max + 1;
  const int bid_last = BlockIdAt(p, qp_max);
  if (bid_last >= 0) {
    while (BlockIdAt(p, k_hi) == bid_last) ++k_hi;
  }
  if (p.block_overrides_window && p.window > 0) {
    const int bid_first = BlockIdAt(p, qp_min);
    if (bid_first >= 0) {
      int b = qp_min;
      while (BlockIdAt(p, b - 1) == bid_first) --b;
      k_lo = max(p.kv_begin, min(k_lo, b));
    }
  }
  *lo = k_lo;
  *hi = min(k_hi, p.kv_end);
}

// The keys that a CTA's query rows [row0, row0 + block_m) may see, in tiles of block_n keys from tile0 (rows past
// total_rows are padding), and the query positions qp_min..qp_max those rows hold.
struct CtaKeyTiles {
  int qp_min, qp_max, tile0, num_tiles;
};
__device__ __forceinline__ CtaKeyTiles KeyTilesOf(const AttentionParams& p, int row0, int block_m, int block_n,
                                                  int group, int total_rows) {
  CtaKeyTiles kt;
  const int last_row = min(row0 + block_m, total_rows) - 1;
  kt.qp_min = p.q_pos0 + row0 / group;
  kt.qp_max = p.q_pos0 + last_row / group;
  int k_lo, k_hi;
  TileKeyRange(p, kt.qp_min, kt.qp_max, &k_lo, &k_hi);
  kt.tile0 = (k_lo >= 0 ? k_lo / block_n : 0) * block_n;
  kt.num_tiles = k_hi > kt.tile0 ? (k_hi - kt.tile0 + block_n - 1) / block_n : 0;
  return kt;
}

// Query row `row` of KV head kv_head's tile: position row / group, head kv_head * group + row % group; nullptr
// past the last row.
__device__ __forceinline__ const bf16* QueryRow(const AttentionParams& p, int row, int group, int kv_head,
                                               int total_rows) {
  if (row >= total_rows) return nullptr;
  return p.q + (row / group) * p.q_token_stride + (kv_head * group + row % group) * p.q_head_stride;
}

// A thread's two rows in the m16n8 accumulator layout, g and g + 8 of its warp's 16: tile row, query position
// and vision block of each.
struct ThreadRows {
  int row[2], qpos[2], block[2];
};
__device__ __forceinline__ ThreadRows RowsOfThread(const AttentionParams& p, int row0, int warp, int g, int group) {
  ThreadRows r;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    r.row[i] = row0 + warp * 16 + g + 8 * i;
    r.qpos[i] = p.q_pos0 + r.row[i] / group;
    r.block[i] = BlockIdAt(p, r.qpos[i]);
  }
  return r;
}

}  // namespace avserve::engine::cuda
