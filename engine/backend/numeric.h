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

// Rounds an fp32 value to what `dtype` can hold (identity for fp32).
inline float RoundTo(DType dtype, float x) {
  switch (dtype) {
    case DType::kBF16: return Bf16ToF32(F32ToBf16(x));
    case DType::kF16: return F16ToF32(F32ToF16(x));
    default: return x;
  }
}

}  // namespace avserve::engine
