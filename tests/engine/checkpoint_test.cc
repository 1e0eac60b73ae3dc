// Checkpoint loading: both config forms, ids from the config, and clear errors for damaged copies
// (made here from the good tiny checkpoint in a temporary folder).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "engine/api.h"
#include "engine/backend/numeric.h"
#include "engine/model/config.h"
#include "nlohmann/json.hpp"
#include "tests/engine/golden.h"

namespace avserve::engine {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

TEST(ModelConfigTest, ReadsRemappedIdsAndStopTokens) {
  auto info = LoadModelInfo(testing::TinyBf16());
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->model_type, "gemma4_unified");
  EXPECT_EQ(info->vocab_size, 512);
  EXPECT_EQ(info->num_layers, 4);
  EXPECT_EQ(info->boi_id, 500);
  EXPECT_EQ(info->boa_id, 501);
  EXPECT_EQ(info->image_id, 502);
  EXPECT_EQ(info->audio_id, 503);
  EXPECT_EQ(info->eoi_id, 504);
  EXPECT_EQ(info->eoa_id, 505);
  EXPECT_EQ(info->video_id, 506);
  EXPECT_EQ(info->stop_ids, (std::vector<int32_t>{1, 106, 50}));  // generation_config wins
  EXPECT_NE(std::find(info->suppress_ids.begin(), info->suppress_ids.end(), 504), info->suppress_ids.end());
  EXPECT_NE(std::find(info->suppress_ids.begin(), info->suppress_ids.end(), 505), info->suppress_ids.end());
}

TEST(ModelConfigTest, PublishedAndTransformersFormsAgree) {
  auto published = LoadModelConfig(testing::TinyBf16());
  auto written = LoadModelConfig(testing::TinyF32());  // per_layer_config form of transformers 5.17
  ASSERT_TRUE(published.ok()) << published.status();
  ASSERT_TRUE(written.ok()) << written.status();
  ASSERT_EQ(published->layers.size(), written->layers.size());
  for (size_t i = 0; i < published->layers.size(); ++i) {
    const LayerConfig &a = published->layers[i], &b = written->layers[i];
    EXPECT_EQ(a.sliding, b.sliding) << i;
    EXPECT_EQ(a.head_dim, b.head_dim) << i;
    EXPECT_EQ(a.num_kv_heads, b.num_kv_heads) << i;
    EXPECT_EQ(a.k_eq_v, b.k_eq_v) << i;
    EXPECT_EQ(a.rope.rotated_pairs, b.rope.rotated_pairs) << i;
    EXPECT_EQ(a.rope.theta, b.rope.theta) << i;
  }
  const LayerConfig& full = published->layers[3];
  EXPECT_FALSE(full.sliding);
  EXPECT_TRUE(full.k_eq_v);
  EXPECT_EQ(full.head_dim, 64);
  EXPECT_EQ(full.num_kv_heads, 1);
  EXPECT_EQ(full.rope.rotated_pairs, 8);  // proportional: 0.25 * 64 / 2
  EXPECT_EQ(published->layers[0].rope.rotated_pairs, 16);
  EXPECT_EQ(published->vision.patch_dim, 6912);
}

class DamagedCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("avserve_ckpt_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    for (const char* f : {"config.json", "generation_config.json", "model.safetensors"}) {
      fs::copy_file(fs::path(testing::TinyBf16()) / f, dir_ / f);
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Load() {
    EngineOptions o;
    o.checkpoint_dir = dir_.string();
    auto engine = Engine::Load(o);
    return engine.ok() ? "" : std::string(engine.status().message());
  }
  // Rewrites model.safetensors with `edit` applied to its JSON header (data unchanged).
  void EditHeader(const std::function<void(Json&)>& edit) {
    std::string bytes = ReadAll(dir_ / "model.safetensors");
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    Json header = Json::parse(bytes.substr(8, n));
    edit(header);
    Write(header, bytes.substr(8 + n));
  }
  void Write(const Json& header, const std::string& data) {
    std::string text = header.dump();
    text.resize((text.size() + 7) / 8 * 8, ' ');  // keep the data 8-byte aligned
    const uint64_t len = text.size();
    std::ofstream out(dir_ / "model.safetensors", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << text << data;
  }
  static std::string ReadAll(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  fs::path dir_;
};

TEST_F(DamagedCheckpointTest, IntactCopyLoads) { EXPECT_EQ(Load(), ""); }

// transformers pads per_layer_config's keys to the width of the largest index ("05" of 48 layers).
TEST_F(DamagedCheckpointTest, PerLayerConfigKeysAreLayerNumbers) {
  Json cfg = Json::parse(ReadAll(fs::path(testing::TinyF32()) / "config.json"));
  Json& plc = cfg["text_config"]["per_layer_config"];
  ASSERT_TRUE(plc.contains("3")) << plc.dump();
  plc["03"] = plc["3"];
  plc.erase("3");
  std::ofstream(dir_ / "config.json", std::ios::trunc) << cfg.dump();
  auto padded = LoadModelConfig(dir_.string());
  ASSERT_TRUE(padded.ok()) << padded.status();
  EXPECT_EQ(padded->layers[3].head_dim, 64);
  EXPECT_EQ(padded->layers[3].num_kv_heads, 1);
  EXPECT_EQ(padded->layers[2].head_dim, 32);  // no entry: the text config's head_dim

  plc["4"] = plc["03"];  // past the last layer
  std::ofstream(dir_ / "config.json", std::ios::trunc) << cfg.dump();
  auto bad = LoadModelConfig(dir_.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("per_layer_config key \"4\""), std::string::npos) << bad.status();
}

TEST_F(DamagedCheckpointTest, TruncatedFileNamesTensorAndFile) {
  const auto size = fs::file_size(dir_ / "model.safetensors");
  fs::resize_file(dir_ / "model.safetensors", size / 2);
  const std::string err = Load();
  EXPECT_NE(err.find("model.safetensors"), std::string::npos) << err;
  EXPECT_NE(err.find("tensor "), std::string::npos) << err;
  EXPECT_NE(err.find("truncated"), std::string::npos) << err;
}

TEST_F(DamagedCheckpointTest, TruncatedHeaderIsAnError) {
  fs::resize_file(dir_ / "model.safetensors", 100);
  const std::string err = Load();
  EXPECT_NE(err.find("model.safetensors"), std::string::npos) << err;
}

TEST_F(DamagedCheckpointTest, RenamedTensorIsReportedMissing) {
  EditHeader([](Json& h) {
    const std::string from = "model.language_model.layers.2.mlp.up_proj.weight";
    h["model.language_model.layers.2.mlp.upp_proj.weight"] = h[from];
    h.erase(from);
  });
  const std::string err = Load();
  EXPECT_NE(err.find("missing tensor model.language_model.layers.2.mlp.up_proj.weight"), std::string::npos) << err;
}

TEST_F(DamagedCheckpointTest, WrongShapeNamesTensorAndShapes) {
  EditHeader([](Json& h) {  // same element count, transposed
    h["model.language_model.layers.1.mlp.down_proj.weight"]["shape"] = Json::array({128, 64});
  });
  const std::string err = Load();
  EXPECT_NE(err.find("model.language_model.layers.1.mlp.down_proj.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("[128, 64], expected [64, 128]"), std::string::npos) << err;
  EXPECT_NE(err.find("model.safetensors"), std::string::npos) << err;
}

TEST_F(DamagedCheckpointTest, ExtraTensorIsRefused) {
  EditHeader([](Json& h) { h["model.language_model.layers.0.self_attn.extra"] = h["model.language_model.norm.weight"]; });
  EXPECT_NE(Load().find("unexpected tensor model.language_model.layers.0.self_attn.extra"), std::string::npos);
}

TEST_F(DamagedCheckpointTest, UnsupportedDtypeIsRefused) {
  EditHeader([](Json& h) { h["model.language_model.norm.weight"]["dtype"] = "I8"; });
  const std::string err = Load();
  EXPECT_NE(err.find("model.language_model.norm.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("unsupported dtype I8"), std::string::npos) << err;
}

TEST_F(DamagedCheckpointTest, UnknownModelTypeIsRefused) {
  std::ifstream in(dir_ / "config.json");
  Json cfg = Json::parse(in);
  cfg["model_type"] = "gemma3";
  std::ofstream(dir_ / "config.json") << cfg.dump();
  EXPECT_NE(Load().find("unknown model_type \"gemma3\""), std::string::npos);
}

TEST_F(DamagedCheckpointTest, MalformedConfigIsRefused) {
  std::ofstream(dir_ / "config.json") << "{ not json";
  EXPECT_NE(Load().find("config.json"), std::string::npos);
}

TEST_F(DamagedCheckpointTest, MissingWeightsFileIsNotFound) {
  fs::remove(dir_ / "model.safetensors");
  EngineOptions o;
  o.checkpoint_dir = dir_.string();
  auto engine = Engine::Load(o);
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(DamagedCheckpointTest, F16CopyMatchesTheF32Reference) {
  // bf16 -> f16 keeps every value here (8 mantissa bits fit in 10) and the byte layout.
  std::string bytes = ReadAll(dir_ / "model.safetensors");
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  Json header = Json::parse(bytes.substr(8, n));
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    (*it)["dtype"] = "F16";
    const auto off = (*it)["data_offsets"].get<std::vector<size_t>>();
    for (size_t b = 8 + n + off[0]; b < 8 + n + off[1]; b += 2) {
      uint16_t h;
      std::memcpy(&h, bytes.data() + b, 2);
      h = F32ToF16(Bf16ToF32(h));
      std::memcpy(bytes.data() + b, &h, 2);
    }
  }
  Write(header, bytes.substr(8 + n));
  EngineOptions o;
  o.checkpoint_dir = dir_.string();
  auto engine = Engine::Load(o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const testing::Golden golden = testing::Golden::Load();
  auto seq = (*engine)->NewSequence(128);
  ASSERT_TRUE(seq.ok());
  (*seq)->set_keep_all_logits(true);
  ASSERT_TRUE((*seq)->Prefill(golden.Chunk("p1", 0, golden.length("p1")), nullptr).ok());
  EXPECT_LE(testing::MaxRowRelError((*seq)->logits(), golden.logits("f32_p1_A"), golden.vocab()), 1e-3);
}

TEST(CheckpointTest, ShardedCheckpointLoadsAndRuns) {
  EngineOptions o;
  o.checkpoint_dir = testing::TinyF32();
  auto engine = Engine::Load(o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto seq = (*engine)->NewSequence(16);
  ASSERT_TRUE(seq.ok());
  PromptChunk c;
  c.ids = {2, 105, 120};
  c.types.assign(3, TokenType::kText);
  ASSERT_TRUE((*seq)->Prefill(c, nullptr).ok());
  EXPECT_EQ((*seq)->logits().size(), 512u);
}

}  // namespace
}  // namespace avserve::engine
