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

// The GeGLU product x = round(round(gelu_tanh(gate)) * up) (GeluTanhMul's rounding), gate and up [m, k] with
// row strides (multiples of 8, 16-byte aligned).
struct GegluInput {
  const __nv_bfloat16* gate = nullptr;
  const __nv_bfloat16* up = nullptr;
  int64_t gate_stride = 0, up_stride = 0;
};
// c = x · bᵀ with x computed from `in` inside the product (p.a, p.lda: h, whose layout only picks the kernel, as
// for LaunchGemv; h is neither read nor written. Note [GeGLU into the down
// product] in gemv.cu), bit for bit LaunchGeglu then LaunchGemv(p, stream, kernel). Launches only where that
// product would run on the row-streaming kernel and h fits in shared memory beside that kernel's CTAs an SM
// (k = 15360: 1-2 rows); returns false, launching nothing, otherwise.
bool LaunchGeluTanhMulGemv(const GemmParams& p, const GegluInput& in, cudaStream_t stream,
                           GemvKernel kernel = GemvKernel::kAuto);

}  // namespace avserve::engine::cuda
