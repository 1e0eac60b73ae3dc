// Row mean and variance computed the way PyTorch's CPU LayerNorm does for bf16/f16 inputs on an
// AVX-512 build (at::native RowwiseMoments): Welford updates per fp32 lane over chunks of 16
// vectors of 32 elements (each vector split into two 16-lane halves), chunk results merged in a
// binary cascade, lanes merged last; multiply-adds fused as the compiler fuses them there.
// The reference backend uses it so that LayerNorm over near-constant rows (where the variance is
// tiny and every fp32 rounding of it shows in the output) rounds like transformers.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

namespace avserve::engine::torch_compat {

inline constexpr int64_t kLanes = 16;       // fp32 lanes of an AVX-512 register
inline constexpr int64_t kHalfVec = 32;     // 16-bit elements per AVX-512 register
inline constexpr int64_t kChunkVecs = 16;   // vectors per Welford chunk

// Running (count, mean, M2) of kLanes independent lanes.
struct LaneMoments {
  int64_t count = 0;
  std::array<float, kLanes> m1{}, m2{};

  // Merges `add` (every lane holding `add_count` samples) into this (Chan et al.).
  void Merge(int64_t add_count, const std::array<float, kLanes>& add_m1, const std::array<float, kLanes>& add_m2) {
    const int64_t n = count + add_count;
    const float c = n == 0 ? 0.0f : static_cast<float>(add_count) / static_cast<float>(n);
    for (int64_t l = 0; l < kLanes; ++l) {
      const float delta = add_m1[l] - m1[l];
      m1[l] = std::fma(c, delta, m1[l]);
      m2[l] = m2[l] + std::fma(delta * delta * c, static_cast<float>(count), add_m2[l]);
    }
    count = n;
  }
};

// Welford over `vecs` vectors starting at x, one 16-lane half of each, into `into`.
inline void ChunkHalf(const float* x, int64_t vecs, int64_t half, LaneMoments& into) {
  std::array<float, kLanes> m1{}, m2{};
  for (int64_t j = 0; j < vecs; ++j) {
    const float c = 1.0f / static_cast<float>(j + 1);
    for (int64_t l = 0; l < kLanes; ++l) {
      const float v = x[j * kHalfVec + half * kLanes + l];
      const float delta = v - m1[l];
      m1[l] = std::fma(delta, c, m1[l]);
      m2[l] = std::fma(delta, v - m1[l], m2[l]);
    }
  }
  into.Merge(vecs, m1, m2);
}

// Mean and biased variance of x[0, n).
inline void RowMoments(const float* x, int64_t n, float* mean, float* var) {
  const int64_t vecs = n / kHalfVec, chunks = (vecs + kChunkVecs - 1) / kChunkVecs;
  int depth = 0;
  while ((int64_t{1} << depth) < chunks) ++depth;
  std::vector<LaneMoments> stack(std::max(depth, 1));
  for (int64_t i = 0; i < chunks; ++i) {
    const int64_t m0 = std::min(kChunkVecs, vecs - i * kChunkVecs);
    const float* p = x + i * kChunkVecs * kHalfVec;
    ChunkHalf(p, m0, 0, stack[0]);
    ChunkHalf(p, m0, 1, stack[0]);
    int64_t mask = i + 1;
    for (int j = 1; j < depth && (mask & 1) == 0; ++j, mask >>= 1) {
      stack[j].Merge(stack[j - 1].count, stack[j - 1].m1, stack[j - 1].m2);
      stack[j - 1] = LaneMoments{};
    }
  }
  for (int i = 1; i < depth; ++i) stack[0].Merge(stack[i].count, stack[i].m1, stack[i].m2);
  // Scalar tail, then the lanes.
  int64_t count = 0;
  float m1 = 0.0f, m2 = 0.0f;
  for (int64_t i = vecs * kHalfVec; i < n; ++i) {
    const float delta = x[i] - m1;
    ++count;
    m1 += delta / static_cast<float>(count);
    m2 = std::fma(delta, x[i] - m1, m2);
  }
  const int64_t lane_count = vecs * kHalfVec / kLanes;
  for (int64_t l = 0; l < kLanes; ++l) {
    const int64_t total = count + lane_count;
    const float c = total == 0 ? 0.0f : static_cast<float>(lane_count) / static_cast<float>(total);
    const float delta = stack[0].m1[l] - m1;
    m1 = std::fma(c, delta, m1);
    m2 = m2 + std::fma(delta * delta * c, static_cast<float>(count), stack[0].m2[l]);
    count = total;
  }
  *mean = m1;
  *var = m2 / static_cast<float>(n);
}

}  // namespace avserve::engine::torch_compat
