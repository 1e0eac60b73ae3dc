// RMSNorm over rows, with optional fused RoPE (q/k norms), residual add and layer scale (post norms).
//   y = bf16(x * (mean(x^2) + eps)^-1/2 * w)              (spec §5.2; no weight when weight == nullptr)
//   then, if positions: y = RoPE(y) in bf16 (spec §5.4, §5.7.4)
//   then, if residual:  y = bf16(residual + y); if out_scale: y = bf16(y * out_scale[0])   (spec §5.3)
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace avserve::engine::cuda {

struct RmsNormParams {
  const __nv_bfloat16* x = nullptr;         // [tokens, heads, dim] with the strides below
  __nv_bfloat16* y = nullptr;               // [tokens, heads, dim] with the y strides below (may alias x)
  const __nv_bfloat16* weight = nullptr;    // [dim] or nullptr
  const __nv_bfloat16* residual = nullptr;  // same layout as y, or nullptr (may alias y)
  const __nv_bfloat16* out_scale = nullptr; // [1] device scalar (layer_scalar) or nullptr
  bool host_scaled = false;                 // multiply by host_scale instead (when out_scale is nullptr)
  float host_scale = 1.f;
  int64_t token_stride = 0;                 // elements between tokens of x
  int64_t head_stride = 0;                  // elements between heads of one token of x
  int64_t y_token_stride = 0;               // y and residual; 0 = same as x
  int64_t y_head_stride = 0;                // 0 = same as x
  int tokens = 0;
  int heads = 1;                            // rows per token
  int dim = 0;                              // multiple of 8
  float eps = 1e-6f;
  // RoPE after the norm (rotate-half pairing), when positions != nullptr.
  const int32_t* positions = nullptr;       // [tokens] absolute positions
  float rope_theta = 10000.f;
  int rope_pairs = 0;                       // pairs (j, j+dim/2) that rotate: dim/2 (default), 64 (proportional)
};

void LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream);

// q and k normed with RoPE and v without weight or RoPE, in one launch (head dims 256 or 512, 16-byte aligned
// rows, the same tokens, q and k with the same positions, theta and rotated pairs: RoPE's cos/sin are computed
// once per token); the caller makes sure that no output overlaps another group's input.
bool QkvNormApplies(const RmsNormParams& q, const RmsNormParams& k, const RmsNormParams& v);
void LaunchQkvNorm(const RmsNormParams& q, const RmsNormParams& k, const RmsNormParams& v, cudaStream_t stream);

// A post norm with its residual add, then the next norm of the updated rows, a block per row at a time (blocks
// loop over rows; the residual row is read once and written once):
//   residual = bf16(residual + bf16(x * (mean(x^2) + eps)^-1/2 * weight)); if scaled: residual = bf16(residual * scale)
//   y = bf16(residual * (mean(residual^2) + eps)^-1/2 * next_weight)
// Same rounding points and sums as LaunchRmsNorm's residual form followed by its plain form.
struct RmsNormAddToNormParams {
  const __nv_bfloat16* x = nullptr;            // [rows, dim], row stride x_stride
  const __nv_bfloat16* weight = nullptr;       // [dim]
  __nv_bfloat16* residual = nullptr;           // [rows, dim], row stride residual_stride; updated in place
  const __nv_bfloat16* next_weight = nullptr;  // [dim]
  __nv_bfloat16* y = nullptr;                  // [rows, dim], row stride y_stride
  int64_t x_stride = 0, residual_stride = 0, y_stride = 0;
  bool scaled = false;
  float scale = 1.f;
  int rows = 0;
  int dim = 0;  // multiple of 8, at most kMaxRmsNormAddToNormDim
  float eps = 1e-6f;
};
constexpr int kMaxRmsNormAddToNormDim = 8192;

// Whether LaunchRmsNormAddToNorm takes `p` (dim, 16-byte aligned rows); otherwise run the two plain launches.
bool RmsNormAddToNormApplies(const RmsNormAddToNormParams& p);
void LaunchRmsNormAddToNorm(const RmsNormAddToNormParams& p, cudaStream_t stream);

}  // namespace avserve::engine::cuda
