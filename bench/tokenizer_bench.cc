// Tokenizer speed on the golden corpus (tests/data/tokenizer/corpus.bin, 1.15 MB, 865 documents):
// load time of tokenizer.json and single-thread encode throughput (best of N passes).
// Compare with bench/tokenizer_bench.js (Hugging Face `tokenizers` via its npm binding) on the same
// machine: bench/tokenizer_bench.sh runs both.
//   avserve_tokenizer_bench [tokenizer.json] [corpus.bin] [passes]
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/model/tokenizer.h"

namespace {

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::vector<std::string> ReadCorpus(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream buffer;
  buffer << file.rdbuf();
  const std::string data = buffer.str();
  std::vector<std::string> docs;
  if (data.size() < 8 || data.compare(0, 4, "AVCP") != 0) return docs;
  uint32_t n = 0;
  std::memcpy(&n, data.data() + 4, 4);
  size_t pos = 8;
  for (uint32_t i = 0; i < n && pos + 4 <= data.size(); ++i) {
    uint32_t len = 0;
    std::memcpy(&len, data.data() + pos, 4);
    docs.push_back(data.substr(pos + 4, len));
    pos += 4 + len;
  }
  return docs;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string source = AVSERVE_SOURCE_DIR;
  const std::string tokenizer_path = argc > 1 ? argv[1] : source + "/.cache/tokenizer-gemma3/tokenizer.json";
  const std::string corpus_path = argc > 2 ? argv[2] : source + "/tests/data/tokenizer/corpus.bin";
  const int passes = argc > 3 ? std::max(1, std::atoi(argv[3])) : 5;

  auto start = std::chrono::steady_clock::now();
  const std::clock_t cpu_start = std::clock();  // CPU time: robust to a busy shared machine
  auto tokenizer = avserve::engine::Tokenizer::LoadFromFile(tokenizer_path);
  const double load_s = Seconds(start);
  const double load_cpu_s = static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
    return 1;
  }
  const std::vector<std::string> docs = ReadCorpus(corpus_path);
  size_t bytes = 0;
  for (const auto& d : docs) bytes += d.size();
  if (docs.empty()) {
    std::fprintf(stderr, "cannot read corpus %s\n", corpus_path.c_str());
    return 1;
  }
  double best = 1e9, best_cpu = 1e9;
  size_t tokens = 0;
  for (int p = 0; p < passes; ++p) {
    tokens = 0;
    start = std::chrono::steady_clock::now();
    const std::clock_t pass_cpu = std::clock();
    for (const auto& d : docs) tokens += (*tokenizer)->Encode(d).size();
    best = std::min(best, Seconds(start));
    best_cpu = std::min(best_cpu, static_cast<double>(std::clock() - pass_cpu) / CLOCKS_PER_SEC);
  }
  std::printf("avserve  load %.3f s (cpu %.3f s)  encode %zu docs %.2f MB %zu tokens: best %.4f s (cpu %.4f s)"
              " = %.2f MB/s, %.0f ktok/s\n", load_s, load_cpu_s, docs.size(), bytes / 1e6, tokens, best, best_cpu,
              bytes / 1e6 / best, tokens / 1e3 / best);
  return 0;
}
