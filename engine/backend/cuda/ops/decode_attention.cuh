// Attention for a few query positions (decode steps) over a long KV cache: Note [Decode attention] in
// decode_attention.cu. Same parameters, visibility and rounding contract as attention.cuh.
#pragma once

#include "engine/backend/cuda/ops/attention.cuh"

namespace avserve::engine::cuda {

inline constexpr int kDecodeMaxQueries = 4;
inline constexpr int kDecodeMaxGroup = 4;  // query heads per KV head (see DecodeAttentionApplies)

// head_dim 256 or 512, GQA group <= kDecodeMaxGroup, q_len <= kDecodeMaxQueries.
bool DecodeAttentionApplies(const AttentionParams& p);
// Key slices: about two CTAs per SM, at least 32 and at most 1024 keys per slice.
int ChooseDecodeSplits(const AttentionParams& p, int num_sms);
// Whether p.num_splits slices keep each slice within the kernel's shared memory.
bool DecodeSlicesFit(const AttentionParams& p);
// Needs p.num_splits from ChooseDecodeSplits and, when > 1, a workspace of AttentionWorkspaceBytes(p).
void LaunchDecodeAttention(const AttentionParams& p, cudaStream_t stream);

}  // namespace avserve::engine::cuda
