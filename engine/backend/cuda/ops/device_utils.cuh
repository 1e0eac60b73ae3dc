// Device-side helpers shared by the kernels (included by .cu files only).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace avserve::engine::cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float Bf16Round(float x) { return __bfloat162float(__float2bfloat16(x)); }

__device__ __forceinline__ float GeluTanh(float x) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * x * (1.f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}

// One GeGLU value from bf16 gate and up values (spec §5.3): bf16(gelu_tanh(gate)) · up, before the caller's
// rounding of the result to bf16. Every kernel that forms the MLP's hidden row takes it from here.
__device__ __forceinline__ float GegluProduct(float gate, float up) { return Bf16Round(GeluTanh(gate)) * up; }

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// Sum over the whole block; `scratch` holds one float per warp. Every thread gets the result.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = (blockDim.x + 31) >> 5;
  v = WarpSum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < num_warps; ++w) total += scratch[w];
  return total;
}

// Maximum over the whole block; `scratch` holds one float per warp. Every thread gets the result.
__device__ __forceinline__ float BlockMax(float v, float* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = (blockDim.x + 31) >> 5;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float m = scratch[0];
  for (int w = 1; w < num_warps; ++w) m = fmaxf(m, scratch[w]);
  return m;
}

// 8 bf16 values moved as one 16-byte access.
struct alignas(16) Bf16x8 {
  __nv_bfloat162 v[4];
};

// 8 values kept packed in registers (4 registers instead of 8 floats), unpacked where used.
__device__ __forceinline__ void UnpackBf16x8(const Bf16x8& pack, float out[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(pack.v[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ Bf16x8 PackBf16x8(const float in[8]) {
  Bf16x8 pack;
#pragma unroll
  for (int i = 0; i < 4; ++i) pack.v[i] = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
  return pack;
}

__device__ __forceinline__ void LoadBf16x8(const bf16* p, float out[8]) {
  UnpackBf16x8(*reinterpret_cast<const Bf16x8*>(p), out);
}

__device__ __forceinline__ void StoreBf16x8(bf16* p, const float in[8]) {
  *reinterpret_cast<Bf16x8*>(p) = PackBf16x8(in);
}

}  // namespace avserve::engine::cuda
