// Shared fixtures for the tokenizer and pipeline tests: the real Gemma tokenizer.json (fetched by
// scripts/fetch_test_data, never committed) with Gemma 4's control tokens laid over it, and the
// Gemma 4 12B ids as a ModelInfo (what LoadModelInfo reads from config.json).
#pragma once

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "engine/api.h"
#include "engine/model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace avserve::testing {

inline std::string TestDataPath(const std::string& relative) {
  return std::string(AVSERVE_SOURCE_DIR) + "/tests/data/" + relative;
}

inline std::string GemmaTokenizerPath() {
  return std::string(AVSERVE_SOURCE_DIR) + "/.cache/tokenizer-gemma3/tokenizer.json";
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream out;
  out << file.rdbuf();
  return out.str();
}

// The Gemma tokenizer with Gemma 4's special tokens, loaded once per process (the file is 33 MB).
// Returns null when the file is missing (callers GTEST_SKIP with the reason).
inline const engine::Tokenizer* Gemma4TestTokenizer() {
  static const engine::Tokenizer* tokenizer = [] () -> const engine::Tokenizer* {
    auto loaded = engine::Tokenizer::LoadFromFile(GemmaTokenizerPath());
    if (!loaded.ok()) return nullptr;
    const auto table = nlohmann::json::parse(ReadFile(TestDataPath("tokenizer/gemma4_special_tokens.json")));
    for (const auto& entry : table["tokens"]) {
      if (!(*loaded)->SetSpecialToken(entry[0].get<int32_t>(), entry[1].get<std::string>()).ok()) {
        return nullptr;
      }
    }
    return loaded->release();
  }();
  return tokenizer;
}

// Gemma 4 12B's ids (config.json of google/gemma-4-12B-it, spec section 1.4).
inline engine::ModelInfo Gemma4TestModelInfo() {
  engine::ModelInfo info;
  info.model_type = "gemma4_unified";
  info.vocab_size = 262144;
  info.hidden_size = 3840;
  info.num_layers = 48;
  info.max_context = 262144;
  info.pad_id = 0;
  info.eos_id = 1;
  info.bos_id = 2;
  info.boi_id = 255999;
  info.eoi_id = 258882;
  info.image_id = 258880;
  info.video_id = 258884;
  info.boa_id = 256000;
  info.eoa_id = 258883;
  info.audio_id = 258881;
  info.stop_ids = {1, 106, 50};
  info.suppress_ids = {258883, 258882};
  return info;
}

}  // namespace avserve::testing
