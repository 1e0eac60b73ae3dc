#include "engine/backend/cuda/ops/layer_norm.cuh"

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/device_utils.cuh"

namespace avserve::engine::cuda {
namespace {

constexpr int kThreads = 256;

// One block per row; two passes for the mean and the centred variance (no cancellation).
__global__ void __launch_bounds__(kThreads) LayerNormKernel(LayerNormParams p) {
  __shared__ float scratch[kThreads / 32];
  const bf16* x = p.x + static_cast<int64_t>(blockIdx.x) * p.dim;
  bf16* y = p.y + static_cast<int64_t>(blockIdx.x) * p.dim;
  float sum = 0.f;
  for (int i = threadIdx.x * 8; i < p.dim; i += kThreads * 8) {
    float v[8];
    LoadBf16x8(x + i, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) sum += v[k];
  }
  const float mean = BlockSum(sum, scratch) / static_cast<float>(p.dim);
  float sq = 0.f;
  for (int i = threadIdx.x * 8; i < p.dim; i += kThreads * 8) {
    float v[8];
    LoadBf16x8(x + i, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) sq += (v[k] - mean) * (v[k] - mean);
  }
  const float rstd = rsqrtf(BlockSum(sq, scratch) / static_cast<float>(p.dim) + p.eps);
  for (int i = threadIdx.x * 8; i < p.dim; i += kThreads * 8) {
    float v[8], w[8], b[8];
    LoadBf16x8(x + i, v);
    if (p.weight != nullptr) LoadBf16x8(p.weight + i, w);
    if (p.bias != nullptr) LoadBf16x8(p.bias + i, b);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      v[k] = (v[k] - mean) * rstd;
      if (p.weight != nullptr) v[k] *= w[k];
      if (p.bias != nullptr) v[k] += b[k];
    }
    StoreBf16x8(y + i, v);
  }
}

}  // namespace

void LaunchLayerNorm(const LayerNormParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.dim % 8 == 0 && p.dim > 0, "LayerNorm: dim must be a positive multiple of 8");
  if (p.rows == 0) return;
  LayerNormKernel<<<p.rows, kThreads, 0, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace avserve::engine::cuda
