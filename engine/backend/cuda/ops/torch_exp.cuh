// PyTorch's CPU fast exponential on the device, for the kernels whose rounding points follow the CPU reference
// backend (engine/backend/numeric.h TorchFastExp; included by .cu files only).
#pragma once

#include <cstdint>

#include "engine/backend/torch_softmax.h"

namespace avserve::engine::cuda {

// Note [Torch CPU attention numerics]
// The goldens come from transformers' sdpa on CPU, whose flash-attention kernel takes keys in blocks of 512
// positions counted from 0 and, when probabilities are rounded to bf16, computes the first 16·floor(len/16)
// numerators of a block of `len` keys with a vectorized exp (at::vec fexp_u20) and the rest with std::exp. The
// fast exp differs from exp by up to ~1.1e-4 relative, enough to move a probability across a bf16 rounding
// boundary; the fallback attention kernel reproduces both (same formula, every step rounded as on the CPU).
// TorchFastExpKey (engine/backend/torch_softmax.h) says which keys get the fast exp.

// 2^(x·log2 e) with the fractional power from PyTorch's cubic, assembled in the float's bit pattern; explicit
// _rn intrinsics keep nvcc from contracting the steps into different fused multiply-adds.
__device__ inline float TorchFastExp(float x) {
  if (x < __int_as_float(static_cast<int>(0xc2aeac50u))) return 0.0f;  // below ln(FLT_MIN)
  if (x > __int_as_float(0x42b17218)) return INFINITY;                 // above ln(FLT_MAX)
  const float t = __fmul_rn(x, __int_as_float(0x3fb8aa3b));            // x · log2(e), rounded to fp32
  const float frac = __fsub_rn(t, floorf(t));
  float poly = __fmaf_rn(frac, -0.079204240219773236f, -0.22433836478672356f);
  poly = __fmaf_rn(frac, poly, 0.30354260500649682f);
  poly = __fmaf_rn(frac, poly, 0.00010703434948458272f);
  const float bits = __fmaf_rn(8388608.0f, __fsub_rn(t, poly), 1065353216.0f);
  return __int_as_float(static_cast<int32_t>(bits));
}

}  // namespace avserve::engine::cuda
