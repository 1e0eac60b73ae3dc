#include "engine/backend/cuda/ops/tensor_ops.cuh"

#include <algorithm>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/device_utils.cuh"

namespace avserve::engine::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int64_t RowOffset(const RowLayout& l, int64_t r) {
  int64_t off = 0;
  for (int d = l.num_lead - 1; d >= 0; --d) {
    off += (r % l.dims[d]) * l.strides[d];
    r /= l.dims[d];
  }
  return off;
}

__device__ __forceinline__ float LoadAs(const void* base, ElemType t, int64_t i) {
  return t == ElemType::kF32 ? static_cast<const float*>(base)[i]
                             : __bfloat162float(static_cast<const bf16*>(base)[i]);
}

__device__ __forceinline__ float RoundTo(ElemType t, float v) { return t == ElemType::kF32 ? v : Bf16Round(v); }

__device__ __forceinline__ void StoreAs(void* base, ElemType t, int64_t i, float v) {
  if (t == ElemType::kF32) {
    static_cast<float*>(base)[i] = v;
  } else {
    static_cast<bf16*>(base)[i] = __float2bfloat16(v);
  }
}

__global__ void ElementwiseKernel(ElementwiseParams p) {
  const int64_t total = p.rows * p.cols;
  for (int64_t idx = blockIdx.x * int64_t{kThreads} + threadIdx.x; idx < total; idx += int64_t{gridDim.x} * kThreads) {
    const int64_t r = idx / p.cols, c = idx % p.cols;
    const float a = LoadAs(p.a, p.a_type, RowOffset(p.a_rows, r) + c);
    float v = a;
    switch (p.op) {
      case ElementwiseParams::Op::kConvert: break;
      case ElementwiseParams::Op::kAdd: v = a + LoadAs(p.b, p.b_type, RowOffset(p.b_rows, r) + c); break;
      case ElementwiseParams::Op::kScale: v = a * p.scalar; break;
      case ElementwiseParams::Op::kSoftcap:
        v = RoundTo(p.out_type, RoundTo(p.out_type, tanhf(RoundTo(p.out_type, a / p.scalar))) * p.scalar);
        break;
    }
    StoreAs(p.out, p.out_type, RowOffset(p.out_rows, r) + c, v);
  }
}

__global__ void RopeKernel(RopeOpParams p) {
  extern __shared__ bf16 row[];  // [head_dim]
  const int token = blockIdx.x / p.heads, head = blockIdx.x % p.heads;
  bf16* x = p.x + token * p.token_stride + head * p.head_stride;
  for (int i = threadIdx.x; i < p.head_dim; i += blockDim.x) row[i] = x[i];
  __syncthreads();
  const int pos = p.positions[token];
  const int half = p.head_dim / 2;
  for (int j = threadIdx.x; j < p.head_dim; j += blockDim.x) {
    const int jj = j < half ? j : j - half;
    if (jj >= p.rotated_pairs) continue;
    const float inv_freq = 1.0f / powf(p.theta, static_cast<float>(2 * jj) / static_cast<float>(p.head_dim));
    const float angle = static_cast<float>(pos) * inv_freq;
    const float c = Bf16Round(cosf(angle)), s = Bf16Round(sinf(angle));
    const float partner = __bfloat162float(row[j < half ? j + half : j - half]);
    const float rotated = j < half ? -partner : partner;
    x[j] = __float2bfloat16(Bf16Round(__bfloat162float(row[j]) * c) + Bf16Round(rotated * s));
  }
}

__global__ void AddPosition2dKernel(AddPosition2dParams p) {
  const int i = blockIdx.x;
  const int px = p.positions[2 * i], py = p.positions[2 * i + 1];
  const bool valid = px >= 0 && px < p.table_rows && py >= 0 && py < p.table_rows;
  const bf16* tx = p.table + (static_cast<int64_t>(valid ? px : 0) * 2 + 0) * p.dim;
  const bf16* ty = p.table + (static_cast<int64_t>(valid ? py : 0) * 2 + 1) * p.dim;
  for (int d = threadIdx.x; d < p.dim; d += blockDim.x) {
    const float pe = valid ? Bf16Round(__bfloat162float(tx[d]) + __bfloat162float(ty[d])) : 0.f;
    p.out[i * p.out_stride + d] = __float2bfloat16(__bfloat162float(p.x[i * p.x_stride + d]) + pe);
  }
}

__global__ void CopyRowsKernel(CopyRowsParams p) {
  const int64_t r = blockIdx.x;
  const int4* src = reinterpret_cast<const int4*>(static_cast<const char*>(p.src) + r * p.src_stride_bytes);
  int4* dst =
      reinterpret_cast<int4*>(static_cast<char*>(p.dst) + ((p.first_pos + r) % p.capacity) * p.dst_stride_bytes);
  for (int64_t i = threadIdx.x; i < p.row_bytes / 16; i += blockDim.x) dst[i] = src[i];
}

__global__ void ScatterRowsKernel(ScatterRowsParams p) {
  const int64_t i = blockIdx.x;
  const int32_t target = p.indices[i];
  if (target < 0 || target >= p.dst_rows) return;
  for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) {
    StoreAs(p.dst, p.dst_type, target * p.dst_stride + c, LoadAs(p.src, p.src_type, i * p.src_stride + c));
  }
}

}  // namespace

void LaunchScatterRows(const ScatterRowsParams& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  ScatterRowsKernel<<<static_cast<int>(p.rows), 256, 0, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

void LaunchElementwise(const ElementwiseParams& p, cudaStream_t stream) {
  if (p.rows == 0 || p.cols == 0) return;
  const int64_t blocks = std::min<int64_t>((p.rows * p.cols + kThreads - 1) / kThreads, 132 * 64);
  ElementwiseKernel<<<static_cast<int>(blocks), kThreads, 0, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

void LaunchRope(const RopeOpParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.head_dim % 2 == 0 && p.rotated_pairs <= p.head_dim / 2, "Rope: bad params");
  if (p.tokens == 0 || p.heads == 0) return;
  RopeKernel<<<p.tokens * p.heads, 128, p.head_dim * sizeof(bf16), stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

void LaunchAddPosition2d(const AddPosition2dParams& p, cudaStream_t stream) {
  if (p.n == 0) return;
  AddPosition2dKernel<<<p.n, 256, 0, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

void LaunchCopyRowsToRing(const CopyRowsParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.row_bytes % 16 == 0 && p.capacity > 0, "CopyRowsToRing: rows must be 16-byte multiples");
  if (p.rows == 0) return;
  CopyRowsKernel<<<static_cast<int>(p.rows), 128, 0, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace avserve::engine::cuda
