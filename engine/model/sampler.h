// Token sampling from fp32 logits (design.md §4): greedy, or temperature -> top-k -> top-p with a
// seeded generator (the order transformers applies them); suppressed ids are never chosen.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "engine/api.h"

namespace avserve::engine {

class Sampler {
 public:
  Sampler(const SamplingOptions& options, std::vector<int32_t> suppress_ids)
      : options_(options), suppress_(std::move(suppress_ids)), rng_(options.seed) {}

  // The next token for `logits` [vocab]. Greedy (temperature <= 0) takes the lowest index among
  // equal maxima (GreedyArgmax in engine/backend/argmax.h, which Backend::ArgmaxRows matches). Returns -1
  // only when every id is suppressed or NaN.
  int32_t Sample(std::span<const float> logits);

 private:
  SamplingOptions options_;
  std::vector<int32_t> suppress_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> scratch_;
  std::vector<uint8_t> banned_;  // [vocab] 1 = suppressed
};

}  // namespace avserve::engine
