// Skinny matrix products for decode: c[m, n] = bf16(a[m, k] · b[n, k]ᵀ (+ bias)) with m <= kGemvMaxRows.
// Memory-bound (every weight byte is read once), so one warp per output column streams its weight row
// with 16-byte loads and keeps m fp32 sums; faster than cuBLASLt's general kernels at m = 1..8.
#pragma once

#include <cuda_runtime.h>

#include "engine/backend/cuda/ops/gemm.cuh"

namespace avserve::engine::cuda {

inline constexpr int kGemvMaxRows = 8;

// Whether LaunchGemv handles `p` (bf16 output, b as [n, k], m <= 8, 16-byte aligned rows).
bool GemvApplies(const GemmParams& p);
void LaunchGemv(const GemmParams& p, cudaStream_t stream);

}  // namespace avserve::engine::cuda
