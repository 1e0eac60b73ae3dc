// A sliding layer's decode step of one sequence in one launch: the q/k/v head norms with RoPE of the step's raw
// projection row, its K/V row appended to the ring, and attention over the window, the key slices merged inside
// a thread block cluster (Note [Sliding decode in one launch] in sliding_decode.cu).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "engine/backend/cuda/ops/attention.cuh"

namespace avserve::engine::cuda {

struct SlidingDecodeParams {
  // q: the raw (un-normed) query heads of the step's one row; k, v: the layer's ring; o: the output row.
  // q_len 1; kv_end = q_pos0 + 1 (the new row's position, whose slot the launch writes); window > 0.
  AttentionParams a;
  const __nv_bfloat16* k_raw = nullptr;  // [num_kv_heads, head_dim] with k_raw_head_stride: raw K heads
  const __nv_bfloat16* v_raw = nullptr;  // raw V heads (normed without weight or RoPE)
  int64_t k_raw_head_stride = 0;
  int64_t v_raw_head_stride = 0;
  const __nv_bfloat16* q_weight = nullptr;  // [head_dim]
  const __nv_bfloat16* k_weight = nullptr;  // [head_dim]
  float eps = 1e-6f;
  const int32_t* positions = nullptr;  // [1] on the device: the row's RoPE position
  float rope_theta = 10000.f;
  int rope_pairs = 0;
};

// head_dim 256, GQA group <= 4, one query row, a window of at most 1024 keys, no blocks, 16-byte aligned rows.
bool SlidingDecodeApplies(const SlidingDecodeParams& p);
void LaunchSlidingDecode(const SlidingDecodeParams& p, cudaStream_t stream);

}  // namespace avserve::engine::cuda
