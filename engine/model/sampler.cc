#include "engine/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/backend/argmax.h"

namespace avserve::engine {

int32_t Sampler::Sample(std::span<const float> logits) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  if (banned_.size() != logits.size()) {  // built once per vocabulary size
    banned_.assign(logits.size(), 0);
    for (int32_t id : suppress_) {
      if (id >= 0 && id < vocab) banned_[id] = 1;
    }
  }
  const std::vector<uint8_t>& banned = banned_;
  if (options_.temperature <= 0.0f) return GreedyArgmax(logits, banned.data());
  // Candidates in id order; the order "by logit, ties by id" is established only as far as it is needed.
  scratch_.clear();
  for (int32_t i = 0; i < vocab; ++i) {
    if (!banned[i] && std::isfinite(logits[i])) scratch_.push_back({logits[i] / options_.temperature, i});
  }
  if (scratch_.empty()) return -1;
  const auto before = [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  size_t n = scratch_.size();
  bool sorted = false;
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < n) {
    n = static_cast<size_t>(options_.top_k);
    std::nth_element(scratch_.begin(), scratch_.begin() + n - 1, scratch_.end(), before);
    scratch_.resize(n);
    std::sort(scratch_.begin(), scratch_.end(), before);
    sorted = true;
  }
  // Softmax weights of the survivors against their maximum (double), and their sum.
  float mx = scratch_.front().first;
  for (const auto& c : scratch_) mx = std::max(mx, c.first);
  double sum = 0.0;
  for (const auto& c : scratch_) sum += std::exp(static_cast<double>(c.first - mx));
  // top_p: the smallest most-likely prefix whose mass reaches top_p. Only that head is put in order: the
  // heaviest 256 first, then eight times as many while the mass falls short, each step selecting (nth_element)
  // and sorting just the new part. A full sort of 262,144 candidates costs tens of milliseconds a token
  // (bench/sampler_bench), more than a decode step on the GPU.
  size_t keep = n;
  double kept = sum;
  if (options_.top_p < 1.0f) {
    keep = 0;
    kept = 0.0;  // the weights of the kept head, summed as it grows
    double mass = 0.0;
    for (size_t done = 0; keep == 0;) {
      // 256, 2048, 16384, ...; once the head would reach an eighth of the candidates, all of them.
      size_t head = std::min(n, done == 0 ? size_t{256} : done * 8);
      if (head >= n / 8) head = n;
      if (!sorted) {
        if (head < n) std::nth_element(scratch_.begin() + done, scratch_.begin() + head - 1, scratch_.end(), before);
        std::sort(scratch_.begin() + done, scratch_.begin() + head, before);
      }
      for (size_t i = done; i < head && keep == 0; ++i) {
        const double w = std::exp(static_cast<double>(scratch_[i].first - mx));
        kept += w;
        mass += w / sum;
        if (mass >= options_.top_p) keep = i + 1;
      }
      if (keep == 0 && head == n) keep = n;  // rounding left the total a hair under top_p
      done = head;
    }
  }
  // One uniform draw from the seeded 64-bit generator (53 random bits), then the inverse of the cumulative
  // weights over the kept candidates in their current order (by logit where a top-k or top-p cut sorted them,
  // else by id: the distribution is the same, and the order is fixed, so a seed still gives one answer).
  const double u = static_cast<double>(rng_() >> 11) * (1.0 / 9007199254740992.0) * kept;
  double acc = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    acc += std::exp(static_cast<double>(scratch_[i].first - mx));
    if (u < acc) return scratch_[i].second;
  }
  return scratch_[keep - 1].second;
}

}  // namespace avserve::engine
