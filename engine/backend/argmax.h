// The greedy token choice over one row of fp32 logits. Sampler (engine/model/sampler.cc) and the CPU backend's
// ArgmaxRows both call it, so greedy decoding answers alike with or without logits on the host.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>

namespace avserve::engine {

// The largest value among the ids that are not banned and not NaN, the lowest such id on ties (-0 equals +0,
// -inf may win); -1 when no id is left. banned: [logits.size()], 1 = never chosen; nullptr bans none.
inline int32_t GreedyArgmax(std::span<const float> logits, const uint8_t* banned) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  // The plain argmax first: the largest value (NaN never compares greater), then the first id that holds it.
  // Eight running maxima with no index to carry vectorise; the scan for the index stops at the first hit. The
  // careful scan only when that lands on a banned id or finds nothing above -inf.
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  float lane_max[8] = {kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf};
  int32_t i = 0;
  for (; i + 8 <= vocab; i += 8) {
    for (int j = 0; j < 8; ++j) lane_max[j] = logits[i + j] > lane_max[j] ? logits[i + j] : lane_max[j];
  }
  for (; i < vocab; ++i) lane_max[0] = logits[i] > lane_max[0] ? logits[i] : lane_max[0];
  float best_value = kNegInf;
  for (float m : lane_max) best_value = m > best_value ? m : best_value;
  int32_t best = -1;
  if (best_value > kNegInf) {
    best = static_cast<int32_t>(std::find(logits.begin(), logits.end(), best_value) - logits.begin());
  }
  if (best >= 0 && (banned == nullptr || !banned[best])) return best;
  best = -1;
  for (int32_t k = 0; k < vocab; ++k) {
    if ((banned == nullptr || !banned[k]) && !std::isnan(logits[k]) && (best < 0 || logits[k] > logits[best])) best = k;
  }
  return best;
}

}  // namespace avserve::engine
