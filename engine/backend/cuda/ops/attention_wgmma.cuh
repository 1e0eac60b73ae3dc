// The sliding layers' prefill attention on Hopper's warpgroup instructions (attention_wgmma.cu, Note [Prefill
// attention on warpgroups]). LaunchAttention (attention.cu) takes it where WgmmaAttentionApplies and
// WgmmaAttentionOn both hold and no decode kernel does.
#pragma once

#include <cuda_runtime.h>

#include "engine/backend/cuda/ops/attention.cuh"

namespace avserve::engine::cuda {

// Whether the kernel covers `p`: head_dim 256, one KV split, a ring of at least one 64-key tile, and
// p.allow_warpgroup.
bool WgmmaAttentionApplies(const AttentionParams& p);
// Whether this process runs it: compute capability 9.0, sm_90a code built, AVSERVE_WGMMA_ATTENTION not 0.
bool WgmmaAttentionOn();
void LaunchWgmmaAttention(const AttentionParams& p, cudaStream_t stream);

}  // namespace avserve::engine::cuda
