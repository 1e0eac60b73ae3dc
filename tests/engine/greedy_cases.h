// Logit rows that exercise every rule of the greedy choice (Sampler, Backend::ArgmaxRows): shared by the CPU
// backend test (against Sampler) and the CUDA one (against the CPU backend).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace avserve::engine::testing {

// Fills `rows` (>= 12) rows of `vocab` (>= 256) values, `stride` apart: row 0 random in [-30, 30]; rows 1-11
// planted (ties, suppressed maxima alone and tied with an allowed id, NaNs, all -inf, all NaN, -0 against +0,
// +inf, the last id, only suppressed ids finite); later rows few distinct values (ties everywhere) with NaNs.
// `sup`: ascending, at least 2 ids, all >= 3 and < vocab - 2, none of 8, 10, 12, 60, 61, 200. Returns the greedy
// ids of rows 1-11 with `sup` suppressed.
inline std::vector<int32_t> PlantGreedyCases(float* data, int64_t rows, int64_t vocab, int64_t stride,
                                             const std::vector<int32_t>& sup, std::mt19937& rng) {
  const float nan = std::nanf(""), inf = std::numeric_limits<float>::infinity();
  std::uniform_real_distribution<float> dist(-30.f, 30.f);
  const auto row = [&](int64_t r) { return data + r * stride; };
  for (int64_t r = 0; r < rows; ++r) std::generate(row(r), row(r) + vocab, [&] { return dist(rng); });
  row(1)[10] = row(1)[vocab - 2] = 99.f;                   // tie: 10
  row(2)[sup[1]] = 99.f, row(2)[12] = 60.f;                // suppressed maximum: 12
  row(3)[sup.back()] = row(3)[vocab - 1] = 99.f;           // suppressed id ties an allowed one: vocab - 1
  for (int64_t i = 0; i < vocab; i += 7) row(4)[i] = nan;  // NaNs: 200
  row(4)[200] = 50.f;
  std::fill(row(5), row(5) + vocab, -inf);  // all -inf, id 0 NaN: 1
  row(5)[0] = nan;
  std::fill(row(6), row(6) + vocab, nan);  // nothing to choose: -1
  std::fill(row(7), row(7) + vocab, -1.f);  // -0 equals +0: 8
  row(7)[12] = 0.f, row(7)[8] = -0.f;
  std::fill(row(8), row(8) + vocab, nan);  // only suppressed ids hold numbers: -1
  for (int32_t id : sup) row(8)[id] = 1.f;
  row(9)[sup[0]] = row(9)[60] = row(9)[61] = inf;  // +inf, the first one suppressed: 60
  row(10)[vocab - 1] = 90.f;                        // the last id
  std::fill(row(11), row(11) + vocab, -inf);        // the only finite value suppressed: the first id that is no NaN
  row(11)[sup[1]] = 3.f, row(11)[0] = nan;
  for (int64_t r = 12; r < rows; ++r) {
    for (int64_t i = 0; i < vocab; ++i) row(r)[i] = static_cast<float>(rng() % 6);
    for (int k = 0; k < 8; ++k) row(r)[rng() % vocab] = nan;
  }
  const int32_t last = static_cast<int32_t>(vocab - 1);
  return {10, 12, last, 200, 1, -1, 8, -1, 60, last, 1};
}

}  // namespace avserve::engine::testing
