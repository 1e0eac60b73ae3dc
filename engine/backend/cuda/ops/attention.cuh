// Flash attention for the Gemma 4 decoder (spec §5.4-5.5): bf16 tensor-core kernel (mma.sync m16n8k16) for
// head_dim 256 and 512, any GQA group, causal + optional sliding window + bidirectional vision blocks, over a
// KV cache addressed by absolute position (slot = position % kv_capacity, so one kernel serves the sliding
// ring and the linear full-layer cache). The same kernel does prefill (one KV split) and split-KV decode
// (several splits, merged by a second kernel). On Hopper, a prefill of head_dim 256 (the sliding layers) runs on a
// warpgroup (wgmma) kernel with the same masks and rounding points (attention_wgmma.cu, Note [Prefill attention
// on warpgroups]).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace avserve::engine::cuda {

struct AttentionParams {
  const __nv_bfloat16* q = nullptr;  // [q_len, num_heads, head_dim]
  const __nv_bfloat16* k = nullptr;  // [kv_capacity, num_kv_heads, head_dim] (cache slots)
  const __nv_bfloat16* v = nullptr;  // [kv_capacity, num_kv_heads, head_dim]
  __nv_bfloat16* o = nullptr;        // [q_len, num_heads, head_dim]
  int64_t q_token_stride = 0, q_head_stride = 0;
  int64_t k_slot_stride = 0, k_head_stride = 0;
  int64_t v_slot_stride = 0, v_head_stride = 0;
  int64_t o_token_stride = 0, o_head_stride = 0;
  int q_len = 0;
  int q_pos0 = 0;       // query i sits at absolute position q_pos0 + i
  int kv_begin = 0;     // keys at absolute positions [kv_begin, kv_end) are in the cache
  int kv_end = 0;
  int kv_capacity = 0;  // cache slots; slot of position p is p % kv_capacity
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;     // 256 or 512
  int window = 0;       // > 0: key k visible from q only if k > q - window (sliding layers)
  // Bidirectional blocks: block_ids[p - block_pos0] for p in [block_pos0, block_pos0 + block_len), -1 = none.
  const int32_t* block_ids = nullptr;
  int block_pos0 = 0;
  int block_len = 0;
  // false (documented intent): window AND (causal OR same block).
  // true (plain transformers forward): (window AND causal) OR same block.
  bool block_overrides_window = false;
  float scale = 1.f;    // Gemma 4: 1.0
  // false: the mma.sync kernel even where the warpgroup kernel applies (tests compare the two).
  bool allow_warpgroup = true;
  // Split-KV (decode): num_splits > 1 needs `workspace` of AttentionWorkspaceBytes() bytes.
  int num_splits = 1;
  void* workspace = nullptr;
};

// Splits that fill the GPU for this problem (1 for prefill-sized problems).
int ChooseAttentionSplits(const AttentionParams& p, int num_sms);
size_t AttentionWorkspaceBytes(const AttentionParams& p);
void LaunchAttention(const AttentionParams& p, cudaStream_t stream);
// Whether LaunchAttention runs p on the warpgroup (wgmma) kernel: Hopper, head_dim 256, one KV split.
bool AttentionOnWarpgroups(const AttentionParams& p);
// Merges the fp32 partials of p.num_splits key slices into p.o (used by both split-KV kernels).
void LaunchCombineSplits(const AttentionParams& p, cudaStream_t stream);

}  // namespace avserve::engine::cuda
