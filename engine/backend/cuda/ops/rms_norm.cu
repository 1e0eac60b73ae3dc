#include "engine/backend/cuda/ops/rms_norm.cuh"

#include <cstdint>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/device_utils.cuh"
#include "engine/backend/cuda/ops/pdl.cuh"

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

// One warp per (token, head) row of 256 or 512 dims, for the q/k/v norms (no residual, no scale): lane l holds
// dims [8l, 8l + 8) of each 256-dim chunk in registers, so the rotate_half partner of a dim is in lane l ^ 16
// (256 dims) or in the same lane's other chunk (512). The block kernel above spends two barriers and a
// shared-memory round trip per 256-element row; this one none. Same formulas and rounding points.
template <int kDim, bool kRope>
__device__ __forceinline__ void NormHeadRow(const RmsNormParams& p, int row) {
  constexpr int kChunks = kDim / 256;
  const int lane = threadIdx.x % 32;
  const int token = row / p.heads, head = row % p.heads;
  const bf16* x = p.x + token * p.token_stride + head * p.head_stride;
  float w[kChunks][8];  // the weight is constant: read before waiting for x (Note [Dependent launch])
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    if (p.weight != nullptr) LoadBf16x8(p.weight + c * 256 + lane * 8, w[c]);
  }
  PdlWait();
  PdlLaunchDependents();
  float v[kChunks][8];
  float sum_sq = 0.f;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    LoadBf16x8(x + c * 256 + lane * 8, v[c]);
#pragma unroll
    for (int e = 0; e < 8; ++e) sum_sq += v[c][e] * v[c][e];
  }
  const float inv_rms = rsqrtf(WarpSum(sum_sq) / static_cast<float>(kDim) + p.eps);
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
#pragma unroll
    for (int e = 0; e < 8; ++e) v[c][e] = Bf16Round(v[c][e] * inv_rms * (p.weight != nullptr ? w[c][e] : 1.f));
  }
  if (kRope) {
    const int pos = p.positions[token];
    float out[kChunks][8];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const bool first_half = kChunks == 2 ? c == 0 : lane < 16;
        const float partner = kChunks == 2 ? v[1 - c][e] : __shfl_xor_sync(0xffffffffu, v[c][e], 16);
        const int jj = kChunks == 2 ? lane * 8 + e : (lane % 16) * 8 + e;
        if (jj >= p.rope_pairs) {  // inv_freq == 0: identity
          out[c][e] = v[c][e];
          continue;
        }
        const float inv_freq = 1.0f / powf(p.rope_theta, static_cast<float>(2 * jj) / static_cast<float>(kDim));
        const float angle = static_cast<float>(pos) * inv_freq;
        const float cs = Bf16Round(cosf(angle)), sn = Bf16Round(sinf(angle));
        const float rotated = first_half ? -partner : partner;
        out[c][e] = Bf16Round(Bf16Round(v[c][e] * cs) + Bf16Round(rotated * sn));
      }
    }
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
#pragma unroll
      for (int e = 0; e < 8; ++e) v[c][e] = out[c][e];
    }
  }
  bf16* y = p.y + token * (p.y_token_stride != 0 ? p.y_token_stride : p.token_stride) +
            head * (p.y_head_stride != 0 ? p.y_head_stride : p.head_stride);
#pragma unroll
  for (int c = 0; c < kChunks; ++c) StoreBf16x8(y + c * 256 + lane * 8, v[c]);
}

template <int kDim, bool kRope>
__global__ void __launch_bounds__(256) RmsNormHeadsKernel(RmsNormParams p) {
  const int row = blockIdx.x * 8 + threadIdx.x / 32;
  if (row >= p.tokens * p.heads) return;  // whole warps leave together
  NormHeadRow<kDim, kRope>(p, row);
}

// The q, k and v norms of one step in one launch: warps take q heads (with RoPE), then k heads (with RoPE),
// then v heads (no weight, no RoPE). The groups may run in any order: the caller checked that no output
// overlaps another group's input.
template <int kDim>
__global__ void __launch_bounds__(256) QkvNormKernel(RmsNormParams q, RmsNormParams k, RmsNormParams v) {
  int row = blockIdx.x * 8 + threadIdx.x / 32;
  const int nq = q.tokens * q.heads, nk = k.tokens * k.heads, nv = v.tokens * v.heads;
  if (row < nq) {
    NormHeadRow<kDim, true>(q, row);
  } else if ((row -= nq) < nk) {
    NormHeadRow<kDim, true>(k, row);
  } else if ((row -= nk) < nv) {
    NormHeadRow<kDim, false>(v, row);
  }
}

template <int kDim>
void LaunchHeads(const RmsNormParams& p, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((int64_t{p.tokens} * p.heads + 7) / 8);
  if (p.positions != nullptr) {
    LaunchPdl(RmsNormHeadsKernel<kDim, true>, dim3(blocks), dim3(256), 0, stream, p);
  } else {
    LaunchPdl(RmsNormHeadsKernel<kDim, false>, dim3(blocks), dim3(256), 0, stream, p);
  }
}

bool HeadsKernelApplies(const RmsNormParams& p) {
  const auto div8 = [](int64_t v) { return v % 8 == 0; };
  return (p.dim == 256 || p.dim == 512) && p.residual == nullptr && p.out_scale == nullptr && !p.host_scaled &&
         div8(p.token_stride) && div8(p.head_stride) && div8(p.y_token_stride) && div8(p.y_head_stride) &&
         reinterpret_cast<uintptr_t>(p.x) % 16 == 0 && reinterpret_cast<uintptr_t>(p.y) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p.weight) % 16 == 0;
}

// One block per row; thread t holds the 8-element vectors (c * kThreads + t) of the row in registers, the split
// RmsNormKernel uses, so both sums of squares add in its order. Every input is loaded before the first
// reduction (the two weights even before waiting for the previous kernel), so a decode row costs one round trip
// to memory instead of three.
template <int kChunks>
__global__ void __launch_bounds__(kThreads) RmsNormAddToNormKernel(RmsNormAddToNormParams p) {
  __shared__ float scratch[kThreads / 32];
  const int64_t row = blockIdx.x;
  const bf16* x = p.x + row * p.x_stride;
  bf16* res = p.residual + row * p.residual_stride;
  bf16* y = p.y + row * p.y_stride;
  const auto index = [](int c) { return (c * kThreads + static_cast<int>(threadIdx.x)) * 8; };
  float w[kChunks][8], nw[kChunks][8], v[kChunks][8], r[kChunks][8];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    if (index(c) >= p.dim) continue;
    LoadBf16x8(p.weight + index(c), w[c]);
    LoadBf16x8(p.next_weight + index(c), nw[c]);
  }
  PdlWait();
  PdlLaunchDependents();
  float sum_sq = 0.f;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    if (index(c) >= p.dim) continue;
    LoadBf16x8(x + index(c), v[c]);
    LoadBf16x8(res + index(c), r[c]);
  }
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    if (index(c) >= p.dim) continue;
#pragma unroll
    for (int k = 0; k < 8; ++k) sum_sq += v[c][k] * v[c][k];
  }
  const float inv_rms = rsqrtf(BlockSum(sum_sq, scratch) / static_cast<float>(p.dim) + p.eps);
  float next_sq = 0.f;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    if (index(c) >= p.dim) continue;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      float t = Bf16Round(Bf16Round(v[c][k] * inv_rms * w[c][k]) + r[c][k]);
      if (p.scaled) t = Bf16Round(t * p.scale);
      v[c][k] = t;
      next_sq += t * t;
    }
    StoreBf16x8(res + index(c), v[c]);
  }
  const float next_inv_rms = rsqrtf(BlockSum(next_sq, scratch) / static_cast<float>(p.dim) + p.eps);
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    if (index(c) >= p.dim) continue;
#pragma unroll
    for (int k = 0; k < 8; ++k) nw[c][k] = v[c][k] * next_inv_rms * nw[c][k];
    StoreBf16x8(y + index(c), nw[c]);
  }
}

}  // namespace

bool RmsNormAddToNormApplies(const RmsNormAddToNormParams& p) {
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  return p.dim > 0 && p.dim % 8 == 0 && p.dim <= kMaxRmsNormAddToNormDim && p.x_stride % 8 == 0 &&
         p.residual_stride % 8 == 0 && p.y_stride % 8 == 0 && aligned(p.x) && aligned(p.weight) &&
         aligned(p.residual) && aligned(p.next_weight) && aligned(p.y);
}

void LaunchRmsNormAddToNorm(const RmsNormAddToNormParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(RmsNormAddToNormApplies(p), "RmsNormAddToNorm: dim or alignment not supported");
  if (p.rows == 0) return;
  const int vectors_per_thread = (p.dim / 8 + kThreads - 1) / kThreads;
  if (vectors_per_thread <= 1) {
    LaunchPdl(RmsNormAddToNormKernel<1>, dim3(p.rows), dim3(kThreads), 0, stream, p);
  } else if (vectors_per_thread <= 2) {
    LaunchPdl(RmsNormAddToNormKernel<2>, dim3(p.rows), dim3(kThreads), 0, stream, p);
  } else if (vectors_per_thread <= 4) {
    LaunchPdl(RmsNormAddToNormKernel<4>, dim3(p.rows), dim3(kThreads), 0, stream, p);
  } else {
    LaunchPdl(RmsNormAddToNormKernel<8>, dim3(p.rows), dim3(kThreads), 0, stream, p);
  }
}

bool QkvNormApplies(const RmsNormParams& q, const RmsNormParams& k, const RmsNormParams& v) {
  return q.dim == k.dim && k.dim == v.dim && HeadsKernelApplies(q) && HeadsKernelApplies(k) && HeadsKernelApplies(v) &&
         q.positions != nullptr && k.positions != nullptr && v.positions == nullptr && v.weight == nullptr;
}

void LaunchQkvNorm(const RmsNormParams& q, const RmsNormParams& k, const RmsNormParams& v, cudaStream_t stream) {
  AVSERVE_CHECK(QkvNormApplies(q, k, v), "QkvNorm: unsupported layout");
  const int64_t rows = int64_t{q.tokens} * q.heads + int64_t{k.tokens} * k.heads + int64_t{v.tokens} * v.heads;
  if (rows == 0) return;
  const dim3 blocks(static_cast<unsigned>((rows + 7) / 8));
  if (q.dim == 256) {
    LaunchPdl(QkvNormKernel<256>, blocks, dim3(256), 0, stream, q, k, v);
  } else {
    LaunchPdl(QkvNormKernel<512>, blocks, dim3(256), 0, stream, q, k, v);
  }
}

void LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.dim % 8 == 0 && p.dim > 0 && p.heads > 0, "RmsNorm: dim must be a positive multiple of 8");
  AVSERVE_CHECK(p.positions == nullptr || (p.dim % 2 == 0 && p.rope_pairs <= p.dim / 2), "RmsNorm: bad RoPE");
  if (p.tokens == 0) return;
  if (HeadsKernelApplies(p)) {
    if (p.dim == 256) {
      LaunchHeads<256>(p, stream);
    } else {
      LaunchHeads<512>(p, stream);
    }
    return;
  }
  const size_t smem = p.positions != nullptr ? p.dim * sizeof(bf16) : 0;
  RmsNormKernel<<<p.tokens * p.heads, kThreads, smem, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace avserve::engine::cuda
