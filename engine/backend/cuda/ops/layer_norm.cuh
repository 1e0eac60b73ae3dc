// LayerNorm over rows (vision embedder, spec §2.2): y = bf16((x - mean) / sqrt(var + eps) * w + b),
// statistics in fp32 (biased variance), one rounding at the end.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace avserve::engine::cuda {

struct LayerNormParams {
  const __nv_bfloat16* x = nullptr;       // [rows, dim]
  __nv_bfloat16* y = nullptr;             // [rows, dim] (may alias x)
  const __nv_bfloat16* weight = nullptr;  // [dim] or nullptr
  const __nv_bfloat16* bias = nullptr;    // [dim] or nullptr
  int rows = 0;
  int dim = 0;                            // multiple of 8
  float eps = 1e-5f;
};

void LaunchLayerNorm(const LayerNormParams& p, cudaStream_t stream);

}  // namespace avserve::engine::cuda
