#include "engine/backend/cuda/ops/layer_norm.cuh"

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/device_utils.cuh"

namespace avserve::engine::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kLanes = 8;       // fp32 lanes of PyTorch's CPU vector (at::native RowwiseMoments)
constexpr int kChunkVecs = 16;  // vectors per Welford chunk
constexpr int kMaxDepth = 24;   // merge cascade levels: rows up to 2^24 chunks

// Note [LayerNorm moments]
// The row statistics are computed exactly as the CPU reference backend computes them
// (engine/backend/cpu/torch_moments.h, which reproduces PyTorch's CPU LayerNorm behind the goldens): torch lane l
// (values l, l + 8, ...) runs Welford over chunks of 16 vectors, chunk results are merged in a binary cascade,
// and the 8 lanes are merged last, in order. Every product and sum is rounded on its own (_rn intrinsics keep
// nvcc from fusing them), so near-constant rows, where each fp32 rounding of the variance shows, agree too.
struct Moments {
  float count = 0.f, m1 = 0.f, m2 = 0.f;
};

// Chan et al. merge of (add_count, add_m1, add_m2) into m, in the CPU code's order of operations.
__device__ __forceinline__ void Merge(Moments& m, float add_count, float add_m1, float add_m2) {
  const float n = __fadd_rn(m.count, add_count);
  const float c = n == 0.f ? 0.f : __fdiv_rn(add_count, n);
  const float delta = __fsub_rn(add_m1, m.m1);
  m.m1 = __fadd_rn(m.m1, __fmul_rn(c, delta));
  const float spread = __fmul_rn(__fmul_rn(__fmul_rn(delta, delta), c), m.count);
  m.m2 = __fadd_rn(m.m2, __fadd_rn(add_m2, spread));
  m.count = n;
}

// Moments of torch lane `lane` of row x (dim / 8 vectors).
__device__ Moments LaneMoments(const bf16* x, int vecs, int lane) {
  const int chunks = (vecs + kChunkVecs - 1) / kChunkVecs;
  int depth = 0;
  while ((1 << depth) < chunks) ++depth;
  Moments stack[kMaxDepth];
  for (int i = 0; i < chunks; ++i) {
    const int len = min(kChunkVecs, vecs - i * kChunkVecs);
    float m1 = 0.f, m2 = 0.f;
    for (int j = 0; j < len; ++j) {
      const float v = __bfloat162float(x[(i * kChunkVecs + j) * kLanes + lane]);
      const float delta = __fsub_rn(v, m1);
      m1 = __fadd_rn(m1, __fmul_rn(delta, __fdiv_rn(1.f, static_cast<float>(j + 1))));
      m2 = __fadd_rn(m2, __fmul_rn(delta, __fsub_rn(v, m1)));
    }
    Merge(stack[0], static_cast<float>(len), m1, m2);
    int mask = i + 1;
    for (int j = 1; j < depth && (mask & 1) == 0; ++j, mask >>= 1) {
      Merge(stack[j], stack[j - 1].count, stack[j - 1].m1, stack[j - 1].m2);
      stack[j - 1] = Moments{};
    }
  }
  for (int i = 1; i < depth; ++i) Merge(stack[0], stack[i].count, stack[i].m1, stack[i].m2);
  return stack[0];
}

// One block per row: threads 0..7 compute the moments of the 8 torch lanes, thread 0 merges them, then
// y = (x·rstd + (-rstd·mean))·w + b with both multiply-adds fused, as the CPU kernel does for 16-bit inputs.
__global__ void __launch_bounds__(kThreads) LayerNormKernel(LayerNormParams p) {
  __shared__ float lane_m1[kLanes], lane_m2[kLanes];
  __shared__ float stats[2];
  const bf16* x = p.x + static_cast<int64_t>(blockIdx.x) * p.dim;
  bf16* y = p.y + static_cast<int64_t>(blockIdx.x) * p.dim;
  const int vecs = p.dim / kLanes;
  if (threadIdx.x < kLanes) {
    const Moments m = LaneMoments(x, vecs, threadIdx.x);
    lane_m1[threadIdx.x] = m.m1;
    lane_m2[threadIdx.x] = m.m2;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    Moments all;
    for (int l = 0; l < kLanes; ++l) Merge(all, static_cast<float>(vecs), lane_m1[l], lane_m2[l]);
    const float var = __fdiv_rn(all.m2, static_cast<float>(p.dim));
    const float rstd = __fdiv_rn(1.f, __fsqrt_rn(__fadd_rn(var, p.eps)));
    stats[0] = rstd;
    stats[1] = __fmul_rn(-rstd, all.m1);
  }
  __syncthreads();
  const float rstd = stats[0], shift = stats[1];
  for (int i = threadIdx.x * 8; i < p.dim; i += kThreads * 8) {
    float v[8], w[8], b[8];
    LoadBf16x8(x + i, v);
    if (p.weight != nullptr) LoadBf16x8(p.weight + i, w);
    if (p.bias != nullptr) LoadBf16x8(p.bias + i, b);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      v[k] = __fmaf_rn(__fmaf_rn(v[k], rstd, shift), p.weight != nullptr ? w[k] : 1.f, p.bias != nullptr ? b[k] : 0.f);
    }
    StoreBf16x8(y + i, v);
  }
}

}  // namespace

void LaunchLayerNorm(const LayerNormParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.dim % 8 == 0 && p.dim > 0, "LayerNorm: dim must be a positive multiple of 8");
  AVSERVE_CHECK(p.dim / 8 <= kChunkVecs * (1 << (kMaxDepth - 1)), "LayerNorm: row too long");
  if (p.rows == 0) return;
  LayerNormKernel<<<p.rows, kThreads, 0, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace avserve::engine::cuda
