// Skinny matrix products for decode and batched questions: c[m, n] = a[m, k] · b[n, k]ᵀ (+ bias) with
// m <= kGemvMaxRows, bf16 or fp32 output. Memory-bound (every weight byte is read once): for 1-4 tokens, fp32
// FMAs over rows streamed by a persistent grid (Note [Row-streaming products] in gemv.cu); for more, tensor-core
// mmas fed straight from 16-byte global loads (Note [Skinny GEMM]).
#pragma once

#include <cuda_runtime.h>

#include "engine/backend/cuda/ops/gemm.cuh"

namespace avserve::engine::cuda {

inline constexpr int kGemvMaxRows = 16;  // two n8 tiles of the skinny kernel (Note [Skinny GEMM])

// Whether LaunchGemv handles `p` (b as [n, k], m <= kGemvMaxRows, k a multiple of 32,
// 16-byte aligned rows).
bool GemvApplies(const GemmParams& p);
// Which kernel runs a product: by size (kAuto), or one of the two where it applies (tests, measurements).
enum class GemvKernel { kAuto, kMma, kRows };
void LaunchGemv(const GemmParams& p, cudaStream_t stream, GemvKernel kernel = GemvKernel::kAuto);

// The MLP's hidden rows straight from its gate|up product (decode, 1-4 tokens; Note [GeGLU in the product] in
// gemv.cu): b [n, k] is the gate rows, then the up rows (n = 2F), and c [m, F] (row stride ldc, default F) gets
//   c = bf16(bf16(gelu_tanh(bf16(a · gateᵀ))) · bf16(a · upᵀ)),
// the rounding points of LaunchGemv followed by LaunchGeglu (a few values in 10^4 differ by a bf16 step: the
// note says why). Applies where LaunchGemv would stream rows.
bool GemvGegluApplies(const GemmParams& p);
void LaunchGemvGeglu(const GemmParams& p, cudaStream_t stream);

}  // namespace avserve::engine::cuda
