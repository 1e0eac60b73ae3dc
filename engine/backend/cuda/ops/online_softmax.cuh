// The online-softmax step that the tensor-core attention kernels share (attention.cu, attention_wgmma.cu,
// decode_mma.cu), on the mma.m16n8k16 accumulator layout: a thread holds rows g and g + 8 of its warp's 16
// (element e of an n8 tile is row e / 2), and the four threads of a quad hold the rest of those rows. Rounding
// contract of attention.cuh: fp32 scores and statistics, P rounded to bf16 against the running max, the
// denominator summing the unrounded values. Included by .cu files only.
#pragma once

#include <cfloat>
#include <cstdint>

#include "engine/backend/cuda/ops/mma.cuh"

namespace avserve::engine::cuda {

// 2^x on the special-function unit, results below 2^-126 flushed to 0. exp2f gives the same value for x >= -126
// and spends three more instructions on each call to produce the denormals below (session 12: a tenth of the
// warpgroup attention kernel's instructions).
__device__ __forceinline__ float Exp2Ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// A row tile's state before its first key tile: the O accumulators (kN8 n8 tiles) zero, and both rows' running
// max and sum empty.
template <int kN8>
__device__ __forceinline__ void StartOnlineRows(float (&o)[kN8][4], float (&row_max)[2], float (&row_sum)[2]) {
#pragma unroll
  for (int j = 0; j < kN8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  row_max[0] = row_max[1] = -FLT_MAX;
  row_sum[0] = row_sum[1] = 0.f;
}

// Given the masked scores s of a tile (kN8 n8 tiles): updates the running max and sum of both rows, returns
// in corr the factor that rescales what was accumulated before, and writes P as bf16 A fragments of the P·V
// mma (kN8 / 2 k16 steps).
template <int kN8>
__device__ __forceinline__ void OnlineSoftmaxTile(float (&s)[kN8][4], float (&row_max)[2], float (&row_sum)[2],
                                                  float scale_log2, float (&corr)[2], uint32_t (&pfrag)[kN8 / 2][4]) {
  float tile_max[2] = {-FLT_MAX, -FLT_MAX};
#pragma unroll
  for (int j = 0; j < kN8; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) tile_max[e / 2] = fmaxf(tile_max[e / 2], s[j][e]);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 1));
    tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 2));
    const float new_max = fmaxf(row_max[i], tile_max[i]);
    corr[i] = Exp2Ftz((row_max[i] - new_max) * scale_log2);
    row_max[i] = new_max;
    row_sum[i] *= corr[i];
  }
#pragma unroll
  for (int j = 0; j < kN8; ++j) {
    float pv[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      pv[e] = Exp2Ftz((s[j][e] - row_max[e / 2]) * scale_log2);  // -inf -> 0
      row_sum[e / 2] += pv[e];
    }
    pfrag[j / 2][(j % 2) * 2 + 0] = PackBf16(pv[0], pv[1]);
    pfrag[j / 2][(j % 2) * 2 + 1] = PackBf16(pv[2], pv[3]);
  }
}

// Rescales an output accumulator of kN8 n8 tiles by the rows' factors.
template <int kN8>
__device__ __forceinline__ void RescaleRows(float (&o)[kN8][4], const float (&corr)[2]) {
#pragma unroll
  for (int j = 0; j < kN8; ++j) {
    o[j][0] *= corr[0];
    o[j][1] *= corr[0];
    o[j][2] *= corr[1];
    o[j][3] *= corr[1];
  }
}

}  // namespace avserve::engine::cuda
