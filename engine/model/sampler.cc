#include "engine/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace avserve::engine {

int32_t Sampler::Sample(std::span<const float> logits) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  std::vector<bool> banned(vocab, false);
  for (int32_t id : suppress_) {
    if (id >= 0 && id < vocab) banned[id] = true;
  }
  if (options_.temperature <= 0.0f) {
    int32_t best = -1;
    for (int32_t i = 0; i < vocab; ++i) {
      if (!banned[i] && !std::isnan(logits[i]) && (best < 0 || logits[i] > logits[best])) best = i;
    }
    return best;
  }
  // Candidates sorted by logit (ties by id, so the order is deterministic).
  scratch_.clear();
  for (int32_t i = 0; i < vocab; ++i) {
    if (!banned[i] && std::isfinite(logits[i])) scratch_.push_back({logits[i] / options_.temperature, i});
  }
  if (scratch_.empty()) return -1;
  std::sort(scratch_.begin(), scratch_.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < scratch_.size()) {
    scratch_.resize(options_.top_k);
  }
  // Softmax over the survivors, then keep the smallest prefix whose mass reaches top_p.
  const float mx = scratch_.front().first;
  std::vector<double> p(scratch_.size());
  double sum = 0.0;
  for (size_t i = 0; i < scratch_.size(); ++i) sum += p[i] = std::exp(static_cast<double>(scratch_[i].first - mx));
  size_t keep = scratch_.size();
  if (options_.top_p < 1.0f) {
    double mass = 0.0;
    for (size_t i = 0; i < scratch_.size(); ++i) {
      mass += p[i] / sum;
      if (mass >= options_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0.0;
  for (size_t i = 0; i < keep; ++i) kept += p[i];
  // One uniform draw from the seeded 64-bit generator (53 random bits).
  const double u = static_cast<double>(rng_() >> 11) * (1.0 / 9007199254740992.0) * kept;
  double acc = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (u < acc) return scratch_[i].second;
  }
  return scratch_[keep - 1].second;
}

}  // namespace avserve::engine
