// Skinny matrix products for decode: c[m, n] = bf16(a[m, k] · b[n, k]ᵀ (+ bias)) with m <= kGemvMaxRows.
// Memory-bound (every weight byte is read once), so one warp per output column streams its weight row
// with 16-byte loads and keeps m fp32 sums (2.8 TB/s of weights on an H100 at m = 1, 93% of the copy ceiling).
#pragma once

#include <cuda_runtime.h>

#include "engine/backend/cuda/ops/gemm.cuh"

namespace avserve::engine::cuda {

// Measured on an H100: at 1 row 2.8 TB/s of weights; at 8 rows the per-row activation reads made it ~3x
// slower than cuBLASLt, so only 1-2 rows take this path.
inline constexpr int kGemvMaxRows = 2;

// Whether LaunchGemv handles `p` (bf16 output, b as [n, k], m <= kGemvMaxRows, 16-byte aligned rows).
bool GemvApplies(const GemmParams& p);
void LaunchGemv(const GemmParams& p, cudaStream_t stream);

}  // namespace avserve::engine::cuda
