// Element-wise ops of the decoder: GeGLU, residual add with layer scale, scaled embedding lookup and the
// final-logit soft-cap. Each reproduces the bf16 rounding points of spec §5.7.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace avserve::engine::cuda {

// out[r, i] = bf16(bf16(gelu_tanh(gate[r, i])) * up[r, i])   (spec §5.3, §5.7.7)
struct GegluParams {
  const __nv_bfloat16* gate = nullptr;  // [rows, cols], row stride gate_stride
  const __nv_bfloat16* up = nullptr;    // [rows, cols], row stride up_stride
  __nv_bfloat16* out = nullptr;         // [rows, cols], row stride out_stride
  int64_t gate_stride = 0;
  int64_t up_stride = 0;
  int64_t out_stride = 0;
  int rows = 0;
  int cols = 0;  // multiple of 8
};
void LaunchGeglu(const GegluParams& p, cudaStream_t stream);

// out = bf16(a + b); then, if scale: out = bf16(out * scale[0])   (spec §5.7.6)
struct AddScaleParams {
  const __nv_bfloat16* a = nullptr;      // [n]
  const __nv_bfloat16* b = nullptr;      // [n] or nullptr (scale only)
  __nv_bfloat16* out = nullptr;          // [n] (may alias a or b)
  const __nv_bfloat16* scale = nullptr;  // [1] device scalar or nullptr
  int64_t n = 0;                         // multiple of 8
};
void LaunchAddScale(const AddScaleParams& p, cudaStream_t stream);

// out[r, :] = bf16(table[ids[r], :] * scale); ids outside [0, vocab) give a zero row (spec §5.1).
struct EmbedParams {
  const int32_t* ids = nullptr;           // [rows]
  const __nv_bfloat16* table = nullptr;   // [vocab, dim]
  __nv_bfloat16* out = nullptr;           // [rows, dim]
  int rows = 0;
  int dim = 0;  // multiple of 8
  int vocab = 0;
  float scale = 1.f;  // already rounded to bf16 by the caller (62.0 for the 12B)
};
void LaunchEmbed(const EmbedParams& p, cudaStream_t stream);

// logits[r, v] = float(bf16(bf16(tanh(bf16(x / cap))) * cap))   (spec §5.6)
struct SoftcapParams {
  const __nv_bfloat16* x = nullptr;  // [n]
  float* out = nullptr;              // [n]
  int64_t n = 0;                     // multiple of 8
  float cap = 30.f;                  // <= 0: no cap, plain conversion
};
void LaunchSoftcap(const SoftcapParams& p, cudaStream_t stream);

}  // namespace avserve::engine::cuda
