#include "engine/backend/cuda/ops/gemv.cuh"

#include <cstdint>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/device_utils.cuh"

namespace avserve::engine::cuda {
namespace {

constexpr int kWarps = 8;

template <int kRows>
__global__ void __launch_bounds__(kWarps * 32) GemvKernel(GemmParams p, int64_t lda, int64_t ldb, int64_t ldc) {
  const int lane = threadIdx.x % 32;
  const int64_t col = blockIdx.x * int64_t{kWarps} + threadIdx.x / 32;
  if (col >= p.n) return;
  const bf16* w = p.b + col * ldb;
  float acc[kRows] = {};
#pragma unroll 4
  for (int64_t i = lane * 8; i < p.k; i += 32 * 8) {
    float wv[8];
    LoadBf16x8(w + i, wv);
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float xv[8];
      LoadBf16x8(p.a + r * lda + i, xv);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[r] += wv[e] * xv[e];
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = WarpSum(acc[r]);
  if (lane == 0) {
    const float bias = p.bias != nullptr ? __bfloat162float(p.bias[col]) : 0.f;
    bf16* c = static_cast<bf16*>(p.c);
#pragma unroll
    for (int r = 0; r < kRows; ++r) c[r * ldc + col] = __float2bfloat16(acc[r] + bias);
  }
}

template <int kRows>
void Launch(const GemmParams& p, cudaStream_t stream) {
  const int64_t lda = p.lda != 0 ? p.lda : p.k, ldb = p.ldb != 0 ? p.ldb : p.k, ldc = p.ldc != 0 ? p.ldc : p.n;
  const unsigned blocks = static_cast<unsigned>((p.n + kWarps - 1) / kWarps);
  GemvKernel<kRows><<<blocks, kWarps * 32, 0, stream>>>(p, lda, ldb, ldc);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace

bool GemvApplies(const GemmParams& p) {
  const int64_t lda = p.lda != 0 ? p.lda : p.k, ldb = p.ldb != 0 ? p.ldb : p.k;
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  return p.m >= 1 && p.m <= kGemvMaxRows && !p.b_kn && !p.c_fp32 && p.k % 8 == 0 && lda % 8 == 0 &&
         ldb % 8 == 0 && aligned(p.a) && aligned(p.b);
}

void LaunchGemv(const GemmParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(GemvApplies(p), "Gemv: unsupported shape");
  switch (p.m) {
    case 1: Launch<1>(p, stream); break;
    default: Launch<2>(p, stream); break;
  }
}

}  // namespace avserve::engine::cuda
