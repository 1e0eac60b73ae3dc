// Scalar conversions between fp32 and the 16-bit float formats, shared by the CPU backend and the
// checkpoint loader. Round-to-nearest-even, like PyTorch's casts.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "engine/backend/backend.h"

namespace avserve::engine {

inline float Bf16ToF32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t F32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float F16ToF32(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t man = h & 0x3ffu;
  float f;
  if (exp == 0) {
    f = std::ldexp(static_cast<float>(man), -24);  // zero or subnormal
    return sign ? -f : f;
  }
  uint32_t bits = exp == 31 ? (sign | 0x7f800000u | (man << 13)) : (sign | ((exp + 112) << 23) | (man << 13));
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t F32ToF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00u;
  if (a >= 65520.0f) return sign | 0x7c00u;  // overflow to inf
  if (a < 6.103515625e-05f) {                // subnormal: multiples of 2^-24, nearest-even
    return sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f));
  }
  uint32_t m = bits & 0x7fffffffu;
  m += 0xfffu + ((m >> 13) & 1u);
  return sign | static_cast<uint16_t>((m >> 13) - (112u << 10));
}

// exp(x) as PyTorch's CPU vector code computes it where the result is about to be rounded to
// bf16/f16 (at::vec `fexp_u20`, used by the CPU flash-attention kernel behind transformers' sdpa for
// the softmax numerators): 2^(x·log2 e) with the fractional power from a cubic fitted to bf16
// accuracy, assembled in the float's bit pattern. Relative error up to ~1.1e-4 -- small, but it
// decides how a probability rounds to bf16, so the reference backend reproduces it bit for bit.
inline float TorchFastExp(float x) {
  const auto as_float = [](uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  };
  if (x < as_float(0xc2aeac50u)) return 0.0f;       // below ln(FLT_MIN)
  if (x > as_float(0x42b17218u)) return INFINITY;   // above ln(FLT_MAX)
  const float t = x * as_float(0x3fb8aa3bu);        // x · log2(e), rounded to fp32
  const float frac = t - std::floor(t);
  float poly = std::fma(frac, -0.079204240219773236f, -0.22433836478672356f);
  poly = std::fma(frac, poly, 0.30354260500649682f);
  poly = std::fma(frac, poly, 0.00010703434948458272f);
  // (t - poly) · 2^23 + 127 · 2^23, truncated, is the IEEE bit pattern of 2^t.
  const float bits = std::fma(8388608.0f, t - poly, 1065353216.0f);
  const int32_t i = static_cast<int32_t>(bits);
  float out;
  std::memcpy(&out, &i, 4);
  return out;
}

// Rounds an fp32 value to what `dtype` can hold (identity for fp32).
inline float RoundTo(DType dtype, float x) {
  switch (dtype) {
    case DType::kBF16: return Bf16ToF32(F32ToBf16(x));
    case DType::kF16: return F16ToF32(F32ToF16(x));
    default: return x;
  }
}

}  // namespace avserve::engine
