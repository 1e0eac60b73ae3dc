// Loads the transformers goldens of tests/data/engine/golden (made by make_tiny_checkpoints.py).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/api.h"
#include "nlohmann/json.hpp"

namespace avserve::engine::testing {

inline std::string DataDir() { return std::string(AVSERVE_SOURCE_DIR) + "/tests/data/engine"; }
inline std::string TinyBf16() { return DataDir() + "/tiny"; }
inline std::string TinyF32() { return DataDir() + "/tiny_f32"; }

template <typename T>
std::vector<T> ReadBinary(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string bytes = ss.str();
  std::vector<T> out(bytes.size() / sizeof(T));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
  return out;
}

struct Golden {
  nlohmann::json meta;
  std::vector<uint8_t> vision_u8;  // [frames * patches, 6912]
  std::vector<float> audio;        // [frames, 640]

  static Golden Load() {
    Golden g;
    std::ifstream in(DataDir() + "/golden/golden.json");
    g.meta = nlohmann::json::parse(in);
    g.vision_u8 = ReadBinary<uint8_t>(DataDir() + "/golden/vision_u8.bin");
    g.audio = ReadBinary<float>(DataDir() + "/golden/audio_f32.bin");
    return g;
  }
  // "p1" / "p2" name golden.json's "prompt1" / "prompt2".
  const nlohmann::json& Prompt(const std::string& p) const { return meta.at("prompt" + p.substr(1)); }
  int vocab() const { return meta["vocab"].get<int>(); }
  int prefix_len() const { return meta["prefix_len"].get<int>(); }
  std::vector<int32_t> ids(const std::string& prompt) const {
    return Prompt(prompt)["ids"].get<std::vector<int32_t>>();
  }
  // Logits [positions, vocab] of e.g. "bf16_p1_A".
  std::vector<float> logits(const std::string& key) const {
    return ReadBinary<float>(DataDir() + "/golden/" + meta["logits"][key]["file"].get<std::string>());
  }
  std::vector<int32_t> greedy(const std::string& key) const {
    return meta["greedy"][key]["tokens"].get<std::vector<int32_t>>();
  }
  std::vector<float> greedy_logits(const std::string& key) const {
    return ReadBinary<float>(DataDir() + "/golden/" + meta["greedy"][key]["step_logits"].get<std::string>());
  }

  // Positions [begin, end) of `prompt` as a PromptChunk with their media rows.
  PromptChunk Chunk(const std::string& prompt, int begin, int end) const {
    const std::vector<int32_t> all_ids = ids(prompt);
    const std::vector<int> types = Prompt(prompt)["types"].get<std::vector<int>>();
    const auto xy = meta["vision"]["positions_xy"].get<std::vector<std::vector<int>>>();
    PromptChunk c;
    int vision_row = 0, audio_row = 0;
    for (int i = 0; i < end; ++i) {
      const bool vision = types[i] == 1 || types[i] == 2, is_audio = types[i] == 3;
      if (i >= begin) {
        c.ids.push_back(all_ids[i]);
        c.types.push_back(static_cast<TokenType>(types[i]));
        if (vision) {
          for (int k = 0; k < 6912; ++k) c.vision_patches.push_back(vision_u8[vision_row * 6912 + k] / 255.0f);
          const auto& p = xy[vision_row % xy.size()];
          c.vision_positions.push_back(p[0]);
          c.vision_positions.push_back(p[1]);
        }
        if (is_audio) c.audio_frames.insert(c.audio_frames.end(), audio.begin() + audio_row * 640,
                                         audio.begin() + (audio_row + 1) * 640);
      }
      vision_row += vision;
      audio_row += is_audio;
    }
    return c;
  }
  int length(const std::string& prompt) const { return static_cast<int>(ids(prompt).size()); }
};

// Per-position relative errors of `a` against reference `b` (rows of `vocab` values, b starting at
// row b_row_offset): ||a - b|| / ||b|| in the given norm.
enum class Norm { kL2, kInf };
inline std::vector<double> RowRelErrors(const std::vector<float>& a, const std::vector<float>& b, int vocab,
                                        int b_row_offset = 0, Norm norm = Norm::kInf) {
  std::vector<double> errs;
  const size_t rows = a.size() / vocab;
  for (size_t r = 0; r < rows; ++r) {
    double num = 0.0, den = 0.0;
    for (int j = 0; j < vocab; ++j) {
      const double x = a[r * vocab + j], y = b[(r + b_row_offset) * vocab + j];
      if (norm == Norm::kL2) {
        num += (x - y) * (x - y);
        den += y * y;
      } else {
        num = std::max(num, std::abs(x - y));
        den = std::max(den, std::abs(y));
      }
    }
    if (norm == Norm::kL2) {
      num = std::sqrt(num);
      den = std::sqrt(den);
    }
    errs.push_back(num / std::max(den, 1e-30));
    if (std::getenv("AVSERVE_PRINT_ROW_ERRORS")) std::fprintf(stderr, "row %zu rel err %.3g\n", r, errs.back());
  }
  return errs;
}

inline double MaxRowRelError(const std::vector<float>& a, const std::vector<float>& b, int vocab,
                             int b_row_offset = 0, Norm norm = Norm::kInf) {
  const std::vector<double> e = RowRelErrors(a, b, vocab, b_row_offset, norm);
  return e.empty() ? 0.0 : *std::max_element(e.begin(), e.end());
}

}  // namespace avserve::engine::testing
