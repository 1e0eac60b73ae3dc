// Sampler cost per token at the real vocabulary (262,144 logits), against the full sort the sampler did before
// session 4 (kept here as the baseline, run on the same logits in the same process).
//   sampler_bench [--vocab 262144] [--reps 50]
// Prints one row per setting: best and mean microseconds per Sample() call.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/model/sampler.h"

namespace {

using Clock = std::chrono::steady_clock;

// The pre-session-4 path: every candidate sorted by logit, then the same softmax, top-k, top-p and draw.
int32_t FullSortSample(const std::vector<float>& logits, const avserve::engine::SamplingOptions& o, std::mt19937_64& rng) {
  std::vector<std::pair<float, int32_t>> c;
  c.reserve(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) c.push_back({logits[i] / o.temperature, static_cast<int32_t>(i)});
  std::sort(c.begin(), c.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  if (o.top_k > 0 && static_cast<size_t>(o.top_k) < c.size()) c.resize(o.top_k);
  std::vector<double> p(c.size());
  double sum = 0.0;
  for (size_t i = 0; i < c.size(); ++i) sum += p[i] = std::exp(static_cast<double>(c[i].first - c[0].first));
  size_t keep = c.size();
  double mass = 0.0;
  for (size_t i = 0; o.top_p < 1.0f && i < c.size(); ++i) {
    if ((mass += p[i] / sum) >= o.top_p) {
      keep = i + 1;
      break;
    }
  }
  double kept = 0.0;
  for (size_t i = 0; i < keep; ++i) kept += p[i];
  const double u = static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0) * kept;
  double acc = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    if (u < (acc += p[i])) return c[i].second;
  }
  return c[keep - 1].second;
}

template <typename F>
void Time(const char* name, int reps, F&& sample) {
  double best = 1e30, total = 0.0;
  int64_t check = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    check += sample();
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    best = std::min(best, us);
    total += us;
  }
  std::printf("%-34s best %9.1f us   mean %9.1f us   (checksum %lld)\n", name, best, total / reps,
              static_cast<long long>(check));
}

}  // namespace

int main(int argc, char** argv) {
  int vocab = 262144, reps = 50;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--vocab")) vocab = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
  }
  // Logits shaped like a language model's: a broad normal body and a few strong candidates.
  std::mt19937 gen(1);
  std::normal_distribution<float> body(-2.f, 2.f);
  std::vector<float> logits(vocab);
  for (float& v : logits) v = body(gen);
  for (int i = 0; i < 8; ++i) logits[gen() % vocab] = 12.f + i;
  struct Setting {
    const char* name;
    float temperature, top_p;
    int top_k;
  };
  const Setting settings[] = {{"greedy", 0.f, 1.f, 0},
                              {"temperature 1", 1.f, 1.f, 0},
                              {"temperature 0.7, top-p 0.95", 0.7f, 0.95f, 0},
                              {"temperature 1, top-k 64", 1.f, 1.f, 64},
                              {"temperature 1.5, top-p 0.999", 1.5f, 0.999f, 0}};
  std::printf("sampler_bench: vocab %d, %d reps each\n", vocab, reps);
  for (const Setting& s : settings) {
    avserve::engine::SamplingOptions o;
    o.temperature = s.temperature;
    o.top_p = s.top_p;
    o.top_k = s.top_k;
    o.seed = 5;
    avserve::engine::Sampler sampler(o, {});
    Time((std::string("avserve   ") + s.name).c_str(), reps, [&] { return sampler.Sample(logits); });
    if (s.temperature > 0.f) {
      std::mt19937_64 rng(5);
      Time((std::string("full sort ") + s.name).c_str(), reps, [&] { return FullSortSample(logits, o, rng); });
    }
  }
  return 0;
}
