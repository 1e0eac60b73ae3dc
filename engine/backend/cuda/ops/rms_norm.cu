#include "engine/backend/cuda/ops/rms_norm.cuh"

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/device_utils.cuh"

namespace avserve::engine::cuda {
namespace {

constexpr int kThreads = 128;

// RoPE of one element of a normalized row `n` (bf16 values), position `pos` (spec §5.4 / §5.7.4).
__device__ float RopeElement(const bf16* n, int j, int dim, int pos, float theta, int pairs) {
  const int half = dim / 2;
  const int jj = j < half ? j : j - half;
  const float xj = __bfloat162float(n[j]);
  if (jj >= pairs) return xj;  // inv_freq == 0: cos 1, sin 0, exact identity
  const float inv_freq = 1.0f / powf(theta, static_cast<float>(2 * jj) / static_cast<float>(dim));
  const float angle = static_cast<float>(pos) * inv_freq;
  const float c = Bf16Round(cosf(angle));
  const float s = Bf16Round(sinf(angle));
  const float partner = __bfloat162float(n[j < half ? j + half : j - half]);
  const float rotated = j < half ? -partner : partner;  // rotate_half
  return Bf16Round(xj * c) + Bf16Round(rotated * s);
}

__global__ void __launch_bounds__(kThreads) RmsNormKernel(RmsNormParams p) {
  extern __shared__ bf16 normed[];  // [dim], only used with RoPE
  __shared__ float scratch[kThreads / 32];
  const int row = blockIdx.x;
  const int token = row / p.heads;
  const int head = row % p.heads;
  const int64_t offset = token * p.token_stride + head * p.head_stride;
  const bf16* x = p.x + offset;
  float sum_sq = 0.f;
  for (int i = threadIdx.x * 8; i < p.dim; i += kThreads * 8) {
    float v[8];
    LoadBf16x8(x + i, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) sum_sq += v[k] * v[k];
  }
  const float inv_rms = rsqrtf(BlockSum(sum_sq, scratch) / static_cast<float>(p.dim) + p.eps);
  const bool scaled = p.out_scale != nullptr || p.host_scaled;
  const float scale = p.out_scale != nullptr ? __bfloat162float(p.out_scale[0]) : p.host_scale;
  const int64_t y_offset = token * (p.y_token_stride != 0 ? p.y_token_stride : p.token_stride) +
                           head * (p.y_head_stride != 0 ? p.y_head_stride : p.head_stride);
  bf16* y = p.y + y_offset;
  const bf16* res = p.residual != nullptr ? p.residual + y_offset : nullptr;
  if (p.positions != nullptr) {
    for (int i = threadIdx.x; i < p.dim; i += kThreads) {
      const float w = p.weight != nullptr ? __bfloat162float(p.weight[i]) : 1.f;
      normed[i] = __float2bfloat16(__bfloat162float(x[i]) * inv_rms * w);
    }
    __syncthreads();
    const int pos = p.positions[token];
    for (int i = threadIdx.x; i < p.dim; i += kThreads) {
      float v = Bf16Round(RopeElement(normed, i, p.dim, pos, p.rope_theta, p.rope_pairs));
      if (res != nullptr) v = Bf16Round(v + __bfloat162float(res[i]));
      if (scaled) v = v * scale;
      y[i] = __float2bfloat16(v);
    }
    return;
  }
  for (int i = threadIdx.x * 8; i < p.dim; i += kThreads * 8) {
    float v[8], w[8], r[8];
    LoadBf16x8(x + i, v);
    if (p.weight != nullptr) LoadBf16x8(p.weight + i, w);
    if (res != nullptr) LoadBf16x8(res + i, r);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      v[k] = Bf16Round(v[k] * inv_rms * (p.weight != nullptr ? w[k] : 1.f));
      if (res != nullptr) v[k] = Bf16Round(v[k] + r[k]);
      if (scaled) v[k] = v[k] * scale;
    }
    StoreBf16x8(y + i, v);
  }
}

}  // namespace

void LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.dim % 8 == 0 && p.dim > 0 && p.heads > 0, "RmsNorm: dim must be a positive multiple of 8");
  AVSERVE_CHECK(p.positions == nullptr || (p.dim % 2 == 0 && p.rope_pairs <= p.dim / 2), "RmsNorm: bad RoPE");
  if (p.tokens == 0) return;
  const size_t smem = p.positions != nullptr ? p.dim * sizeof(bf16) : 0;
  RmsNormKernel<<<p.tokens * p.heads, kThreads, smem, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace avserve::engine::cuda
