// The q/k/v head norms' device code, shared by the norm kernels (rms_norm.cu) and the fused sliding-layer decode
// step (sliding_decode.cu): y = RoPE(bf16(x * rms(x)^-1 * w)) of one head row per warp, spec §5.2 and §5.4.
// Included by .cu files only.
#pragma once

#include <cuda_bf16.h>

#include "engine/backend/cuda/ops/device_utils.cuh"

namespace avserve::engine::cuda {

// RoPE's cos and sin of rotated pair j (< the rotated pairs) at position pos, rounded to bf16 (spec §5.4 / §5.7.4).
// The one place of the formula: RopeElement and FillRopeTables both take it.
__device__ __forceinline__ void RopeCosSin(int pos, int j, int dim, float theta, float* c, float* s) {
  const float inv_freq = 1.0f / powf(theta, static_cast<float>(2 * j) / static_cast<float>(dim));
  const float angle = static_cast<float>(pos) * inv_freq;
  *c = Bf16Round(cosf(angle));
  *s = Bf16Round(sinf(angle));
}

template <int kDim>
struct alignas(16) RopeTable {  // of one position: bf16(cos(pos * inv_freq_j)), bf16(sin(...)), j < kDim / 2
  bf16 cos[kDim / 2];
  bf16 sin[kDim / 2];
};

// One head row to norm: x in, y out (16-byte aligned, global or shared memory), optional weight, RoPE or not.
struct HeadRow {
  const bf16* x = nullptr;
  bf16* y = nullptr;
  const bf16* weight = nullptr;
  bool rope = false;
  float eps = 0.f;
};

// Entries j of tables[0, tokens) for positions[0, tokens): cos/sin for pairs j < pairs (cos 1, sin 0 above:
// never read, see NormHeadRow).
template <int kDim>
__device__ __forceinline__ void FillRopeTables(const int32_t* positions, int tokens, float theta, int pairs,
                                               RopeTable<kDim>* tables) {
  for (int i = threadIdx.x; i < tokens * (kDim / 2); i += blockDim.x) {
    const int t = i / (kDim / 2), j = i % (kDim / 2);
    float cs = 1.f, sn = 0.f;
    if (j < pairs) RopeCosSin(positions[t], j, kDim, theta, &cs, &sn);
    tables[t].cos[j] = __float2bfloat16(cs);
    tables[t].sin[j] = __float2bfloat16(sn);
  }
}

template <int kDim>
__device__ __forceinline__ void LoadHeadRow(const HeadRow& h, Bf16x8 (&x)[kDim / 256]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int c = 0; c < kDim / 256; ++c) x[c] = *reinterpret_cast<const Bf16x8*>(h.x + c * 256 + lane * 8);
}

// y = RoPE(bf16(x * inv_rms * w)) of one row held by the warp (`x` as loaded by LoadHeadRow).
template <int kDim>
__device__ __forceinline__ void NormHeadRow(const HeadRow& h, const Bf16x8 (&x)[kDim / 256], int rope_pairs,
                                            const RopeTable<kDim>& table) {
  constexpr int kChunks = kDim / 256;
  const int lane = threadIdx.x % 32;
  float v[kChunks][8], w[kChunks][8];
  float sum_sq = 0.f;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    if (h.weight != nullptr) LoadBf16x8(h.weight + c * 256 + lane * 8, w[c]);
    UnpackBf16x8(x[c], v[c]);
#pragma unroll
    for (int e = 0; e < 8; ++e) sum_sq += v[c][e] * v[c][e];
  }
  const float inv_rms = rsqrtf(WarpSum(sum_sq) / static_cast<float>(kDim) + h.eps);
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
#pragma unroll
    for (int e = 0; e < 8; ++e) v[c][e] = Bf16Round(v[c][e] * inv_rms * (h.weight != nullptr ? w[c][e] : 1.f));
  }
  if (h.rope) {
    // Pair j of dim i: j = i mod kDim/2; lane l holds pairs [8l, 8l + 8) (512) or [8(l % 16), +8) (256).
    const int j0 = kChunks == 2 ? lane * 8 : (lane % 16) * 8;
    float cs[8], sn[8], out[kChunks][8];
    LoadBf16x8(table.cos + j0, cs);
    LoadBf16x8(table.sin + j0, sn);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const bool first_half = kChunks == 2 ? c == 0 : lane < 16;
        const float partner = kChunks == 2 ? v[1 - c][e] : __shfl_xor_sync(0xffffffffu, v[c][e], 16);
        const float rotated = first_half ? -partner : partner;  // rotate_half
        out[c][e] = j0 + e >= rope_pairs ? v[c][e]              // inv_freq == 0: identity
                                         : Bf16Round(Bf16Round(v[c][e] * cs[e]) + Bf16Round(rotated * sn[e]));
      }
    }
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
#pragma unroll
      for (int e = 0; e < 8; ++e) v[c][e] = out[c][e];
    }
  }
#pragma unroll
  for (int c = 0; c < kChunks; ++c) StoreBf16x8(h.y + c * 256 + lane * 8, v[c]);
}

}  // namespace avserve::engine::cuda
