// Row mean and variance computed the way PyTorch's CPU LayerNorm computes them on the machine that
// made the goldens (at::native RowwiseMoments over fp32 vectors of 8 lanes): Welford updates per
// lane over chunks of 16 vectors, chunk results merged in a binary cascade, lanes merged last, every
// product and sum rounded separately. Matched on transformers' recorded pixel-patch LayerNorm
// (6912 values per row): the reference backend uses it so that near-constant rows, where the
// variance is tiny and each fp32 rounding of the statistics shows, round like transformers.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

namespace avserve::engine::torch_compat {

inline constexpr int64_t kLanes = 8;        // fp32 lanes per vector
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
      const float step = c * delta;
      m1[l] = m1[l] + step;
      const float spread = delta * delta * c * static_cast<float>(count);
      m2[l] = m2[l] + (add_m2[l] + spread);
    }
    count = n;
  }
};

// Welford over `vecs` vectors of kLanes values starting at x, merged into `into`.
inline void Chunk(const float* x, int64_t vecs, LaneMoments& into) {
  std::array<float, kLanes> m1{}, m2{};
  for (int64_t j = 0; j < vecs; ++j) {
    const float c = 1.0f / static_cast<float>(j + 1);
    for (int64_t l = 0; l < kLanes; ++l) {
      const float v = x[j * kLanes + l];
      const float delta = v - m1[l];
      const float step = delta * c;
      m1[l] = m1[l] + step;
      const float prod = delta * (v - m1[l]);
      m2[l] = m2[l] + prod;
    }
  }
  into.Merge(vecs, m1, m2);
}

// Mean and biased variance of x[0, n).
inline void RowMoments(const float* x, int64_t n, float* mean, float* var) {
  const int64_t vecs = n / kLanes, chunks = (vecs + kChunkVecs - 1) / kChunkVecs;
  int depth = 0;
  while ((int64_t{1} << depth) < chunks) ++depth;
  std::vector<LaneMoments> stack(std::max(depth, 1));
  for (int64_t i = 0; i < chunks; ++i) {
    Chunk(x + i * kChunkVecs * kLanes, std::min(kChunkVecs, vecs - i * kChunkVecs), stack[0]);
    int64_t mask = i + 1;
    for (int j = 1; j < depth && (mask & 1) == 0; ++j, mask >>= 1) {
      stack[j].Merge(stack[j - 1].count, stack[j - 1].m1, stack[j - 1].m2);
      stack[j - 1] = LaneMoments{};
    }
  }
  for (int i = 1; i < depth; ++i) stack[0].Merge(stack[i].count, stack[i].m1, stack[i].m2);
  // Scalar tail, then the lanes one by one (each lane holds `vecs` samples).
  int64_t count = 0;
  float m1 = 0.0f, m2 = 0.0f;
  for (int64_t i = vecs * kLanes; i < n; ++i) {
    const float delta = x[i] - m1;
    ++count;
    m1 = m1 + delta / static_cast<float>(count);
    const float prod = delta * (x[i] - m1);
    m2 = m2 + prod;
  }
  for (int64_t l = 0; l < kLanes; ++l) {
    const int64_t total = count + vecs;
    const float c = total == 0 ? 0.0f : static_cast<float>(vecs) / static_cast<float>(total);
    const float delta = stack[0].m1[l] - m1;
    const float step = c * delta;
    m1 = m1 + step;
    const float spread = delta * delta * c * static_cast<float>(count);
    m2 = m2 + (stack[0].m2[l] + spread);
    count = total;
  }
  *mean = m1;
  *var = m2 / static_cast<float>(n);
}

}  // namespace avserve::engine::torch_compat
