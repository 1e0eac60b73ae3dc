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

// The MLP's gate|up product followed by its GeGLU in one launch (Note [GeGLU as the product ends] in gemv.cu):
// c [m, n] = gate | up (n = 2F, bf16), and h[t, j] = bf16(bf16(gelu_tanh(gate[t, j])) · up[t, j]) for j < F, as
// LaunchGeglu rounds it. h (row stride ldh) may alias gate's columns of c.
struct GemvGeglu {
  __nv_bfloat16* h = nullptr;
  int64_t ldh = 0;
};
// Whether LaunchGemvGeglu takes p: a product that LaunchGemv would stream by rows, bf16 out, no bias, n = 2F with F
// even.
bool GemvGegluApplies(const GemmParams& p);
void LaunchGemvGeglu(const GemmParams& p, const GemvGeglu& g, cudaStream_t stream);

}  // namespace avserve::engine::cuda
