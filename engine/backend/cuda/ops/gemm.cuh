// bf16 matrix product through cuBLASLt with fp32 accumulation (spec §5.7.3):
//   c[m, n] = bf16(a[m, k] · b[n, k]ᵀ (+ bias[n]))   (or a · b[k, n] with b_kn)
// `b` is a Linear weight as stored in the checkpoint ([out, in], row-major); a and c are row-major.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "engine/backend/cuda/cuda_raii.h"

namespace avserve::engine::cuda {

struct GemmParams {
  const __nv_bfloat16* a = nullptr;     // [m, k], row stride lda (>= k)
  const __nv_bfloat16* b = nullptr;     // [n, k], row stride ldb (>= k); [k, n] (ldb >= n) when b_kn
  bool b_kn = false;                    // b stored [k, n] row-major (e.g. V in P·V)
  void* c = nullptr;                    // [m, n] bf16 (or fp32 when c_fp32), row stride ldc (>= n)
  bool c_fp32 = false;
  bool fp16 = false;                    // a, b and (unless c_fp32) c hold fp16, not bf16 (cuBLASLt only)
  const __nv_bfloat16* bias = nullptr;  // [n] or nullptr (fused epilogue)
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;    // 0 means dense (k, k, n)
};

// Runs on `stream`; returns an error only when cuBLASLt finds no algorithm for the shape.
absl::Status LaunchGemm(const CublasHandle& handle, const GemmParams& p, cudaStream_t stream);

}  // namespace avserve::engine::cuda
