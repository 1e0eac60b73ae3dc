// Attention through cuBLASLt for the full layers' prefill (one KV head, GQA 16, head_dim 512): with a single
// KV head, all 16 query heads of all positions form one [positions*16, 512] matrix, so S = Q·Kᵀ and O = P·V
// are two large tensor-core GEMMs (about 850 TFLOP/s on an H200) with a masked softmax between them
// (fp16 scores, Note [fp16 scores] in gemm_attention.cu; P rounded to bf16 like the flash kernel, written over S).
// The causal upper triangle of each block of queries is computed and discarded; for head_dim 512 that still beats
// the mma.sync flash kernel severalfold. The softmax reads each row of S twice (statistics, then P); keeping a row
// in shared memory to read it once measured no faster (bench/RESULTS.md, session 8).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "absl/status/status.h"
#include "engine/backend/cuda/cuda_raii.h"
#include "engine/backend/cuda/ops/attention.cuh"

namespace avserve::engine::cuda {

// Whether the GEMM path applies: one KV head, linear cache (no wrap), contiguous q and out, no window.
bool GemmAttentionApplies(const AttentionParams& p);
// Workspace bytes for blocks of `positions` query positions: K in fp16 once, then per position its Q in fp16 and
// its heads' scores over the call's keys (fp16, P written over them). The backend gives the path
// kGemmAttentionPositions positions' worth (fewer when memory is short; block heights of 256 and 1,024 measured
// slower, bench/RESULTS.md session 10).
constexpr int kGemmAttentionPositions = 512;
size_t GemmAttentionWorkspaceBytes(const AttentionParams& p, int positions);
// Runs `p` in blocks of query positions that fit `workspace_bytes` (at least 64 MiB advised).
absl::Status LaunchGemmAttention(const CublasHandle& cublas, const AttentionParams& p, void* workspace,
                                 size_t workspace_bytes, cudaStream_t stream);

}  // namespace avserve::engine::cuda
