// Generic row-wise ops of the Backend interface that the fused kernels do not cover: conversion, add,
// scale, soft-cap (fp32 or bf16 in and out), standalone RoPE, the vision 2-D position add and the KV-cache
// ring append. Tensors are [rows, cols] with a row stride; cols contiguous.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace avserve::engine::cuda {

enum class ElemType : uint8_t { kF32, kBF16 };

// Rows of up to 3 leading dims, each with its own stride (elements): row r -> offset.
struct RowLayout {
  int num_lead = 1;
  int64_t dims[3] = {0, 1, 1};
  int64_t strides[3] = {0, 0, 0};
};

struct ElementwiseParams {
  enum class Op : uint8_t { kConvert, kAdd, kScale, kSoftcap };
  Op op = Op::kConvert;
  const void* a = nullptr;
  const void* b = nullptr;  // kAdd only
  void* out = nullptr;
  ElemType a_type = ElemType::kBF16, b_type = ElemType::kBF16, out_type = ElemType::kBF16;
  RowLayout a_rows, b_rows, out_rows;
  int64_t rows = 0;
  int64_t cols = 0;
  float scalar = 1.f;  // kScale factor; kSoftcap cap
};
// kConvert: out = a; kAdd: out = a + b; kScale: out = a * scalar;
// kSoftcap: out = r(r(tanh(r(a / cap))) * cap) with r = rounding to out_type.
void LaunchElementwise(const ElementwiseParams& p, cudaStream_t stream);

// In-place RoPE on bf16 x[tokens, heads, head_dim] (same numerics as the RmsNorm-fused path).
struct RopeOpParams {
  __nv_bfloat16* x = nullptr;
  int64_t token_stride = 0, head_stride = 0;
  const int32_t* positions = nullptr;  // [tokens]
  int tokens = 0, heads = 0, head_dim = 0;
  float theta = 10000.f;
  int rotated_pairs = 0;
};
void LaunchRope(const RopeOpParams& p, cudaStream_t stream);

// out[i, :] = x[i, :] + bf16(table[pos[i,0], 0, :] + table[pos[i,1], 1, :]) (bf16; spec §2.2 step 4).
struct AddPosition2dParams {
  const __nv_bfloat16* x = nullptr;      // [n, dim], row stride x_stride
  const __nv_bfloat16* table = nullptr;  // [table_rows, 2, dim]
  const int32_t* positions = nullptr;    // [n, 2] (column, row); out of range -> zero position vector
  __nv_bfloat16* out = nullptr;          // [n, dim], row stride out_stride
  int64_t x_stride = 0, out_stride = 0;
  int n = 0, dim = 0, table_rows = 0;
};
void LaunchAddPosition2d(const AddPosition2dParams& p, cudaStream_t stream);

// dst row (first_pos + i) % capacity = src row i, rows of `row_bytes` (multiple of 16).
struct CopyRowsParams {
  const void* src = nullptr;
  void* dst = nullptr;
  int64_t src_stride_bytes = 0, dst_stride_bytes = 0;
  int64_t rows = 0, row_bytes = 0, capacity = 0, first_pos = 0;
};
void LaunchCopyRowsToRing(const CopyRowsParams& p, cudaStream_t stream);

// dst[indices[i], :] = src[i, :] converted to dst's type; indices outside [0, dst_rows) are skipped.
struct ScatterRowsParams {
  const void* src = nullptr;
  void* dst = nullptr;
  ElemType src_type = ElemType::kBF16, dst_type = ElemType::kBF16;
  int64_t src_stride = 0, dst_stride = 0;  // elements
  const int32_t* indices = nullptr;        // [rows]
  int64_t rows = 0, cols = 0, dst_rows = 0;
};
void LaunchScatterRows(const ScatterRowsParams& p, cudaStream_t stream);

}  // namespace avserve::engine::cuda
