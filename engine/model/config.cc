#include "engine/model/config.h"

#include <cmath>
#include <algorithm>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace avserve::engine {
namespace {

using Json = nlohmann::json;

absl::StatusOr<Json> ReadJson(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  Json j = Json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  return j;
}

// Typed field access with errors that name the file and the field path.
class Fields {
 public:
  Fields(const Json& obj, std::string where) : obj_(obj), where_(std::move(where)) {}

  bool Has(const char* key) const { return obj_.contains(key) && !obj_[key].is_null(); }

  absl::StatusOr<int64_t> Int(const char* key, std::optional<int64_t> def = std::nullopt) const {
    if (!Has(key)) return Missing(key, def);
    const Json& v = obj_[key];
    if (!v.is_number_integer()) return Bad(key, "an integer");
    return v.get<int64_t>();
  }
  absl::StatusOr<double> Num(const char* key, std::optional<double> def = std::nullopt) const {
    if (!Has(key)) return Missing(key, def);
    const Json& v = obj_[key];
    if (!v.is_number()) return Bad(key, "a number");
    return v.get<double>();
  }
  absl::StatusOr<bool> Bool(const char* key, bool def) const {
    if (!Has(key)) return def;
    if (!obj_[key].is_boolean()) return Bad(key, "a boolean");
    return obj_[key].get<bool>();
  }
  absl::StatusOr<std::string> Str(const char* key, std::optional<std::string> def = std::nullopt) const {
    if (!Has(key)) return Missing(key, def);
    if (!obj_[key].is_string()) return Bad(key, "a string");
    return obj_[key].get<std::string>();
  }
  // An int or a list of ints (eos_token_id).
  absl::StatusOr<std::vector<int32_t>> Ints(const char* key) const {
    std::vector<int32_t> out;
    if (!Has(key)) return out;
    const Json& v = obj_[key];
    if (v.is_number_integer()) return std::vector<int32_t>{v.get<int32_t>()};
    if (!v.is_array()) return Bad(key, "an integer or a list of integers");
    for (const Json& e : v) {
      if (!e.is_number_integer()) return Bad(key, "a list of integers");
      out.push_back(e.get<int32_t>());
    }
    return out;
  }
  absl::StatusOr<Fields> Object(const char* key) const {
    if (!Has(key) || !obj_[key].is_object()) return Bad(key, "an object");
    return Fields(obj_[key], absl::StrCat(where_, ".", key));
  }
  const Json& raw() const { return obj_; }
  const std::string& where() const { return where_; }

 private:
  template <typename T>
  absl::StatusOr<T> Missing(const char* key, const std::optional<T>& def) const {
    if (def) return *def;
    return absl::InvalidArgumentError(absl::StrCat(where_, ".", key, ": missing"));
  }
  absl::Status Bad(const char* key, const char* what) const {
    return absl::InvalidArgumentError(absl::StrCat(where_, ".", key, ": expected ", what));
  }
  const Json& obj_;
  std::string where_;
};

absl::Status Refuse(const Fields& f, const char* what) {
  return absl::UnimplementedError(absl::StrCat(f.where(), ": unsupported ", what));
}

absl::StatusOr<RopeParams> ParseRope(const Fields& text, const char* layer_type, int head_dim) {
  RopeParams rope;
  rope.head_dim = head_dim;
  rope.rotated_pairs = head_dim / 2;
  const bool sliding = std::string(layer_type) == "sliding_attention";
  rope.theta = sliding ? 10000.0f : 1000000.0f;
  std::string type = sliding ? "default" : "proportional";
  double partial = sliding ? 1.0 : 0.25;
  if (text.Has("rope_parameters")) {
    ASSIGN_OR_RETURN(Fields all, text.Object("rope_parameters"));
    ASSIGN_OR_RETURN(Fields p, all.Object(layer_type));
    ASSIGN_OR_RETURN(type, p.Str("rope_type", "default"));
    ASSIGN_OR_RETURN(double theta, p.Num("rope_theta"));
    ASSIGN_OR_RETURN(partial, p.Num("partial_rotary_factor", 1.0));
    ASSIGN_OR_RETURN(double factor, p.Num("factor", 1.0));
    if (factor != 1.0) return Refuse(p, "rope factor != 1");
    rope.theta = static_cast<float>(theta);
  }
  if (type == "proportional") {
    rope.rotated_pairs = static_cast<int>(partial * head_dim) / 2;  // int(p * D // 2) as RU
  } else if (type != "default") {
    return absl::UnimplementedError(absl::StrCat("config.json: rope_type ", type, " not supported"));
  }
  return rope;
}

// per_layer_config's entry for each layer index (nullptr where none). transformers writes the keys as the
// index zero-padded to the width of the largest one ("05" of 48 layers, "1" of 4), so keys are read as numbers.
absl::StatusOr<std::vector<const Json*>> PerLayerOverrides(const Fields& text, int64_t n) {
  std::vector<const Json*> out(static_cast<size_t>(n), nullptr);
  if (!text.Has("per_layer_config")) return out;
  const Json& plc = text.raw()["per_layer_config"];
  if (!plc.is_object()) return absl::InvalidArgumentError("config.json: per_layer_config must be an object");
  for (const auto& [key, entry] : plc.items()) {
    int64_t index = -1;
    if (!absl::SimpleAtoi(key, &index) || index < 0 || index >= n || !entry.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.json: per_layer_config key \"", key, "\" is not a layer index with an object"));
    }
    out[static_cast<size_t>(index)] = &entry;
  }
  return out;
}

// Layer types, per-layer head dims and KV heads (both published and per_layer_config forms).
absl::Status ParseLayers(const Fields& text, ModelConfig& cfg) {
  ASSIGN_OR_RETURN(int64_t n, text.Int("num_hidden_layers"));
  ASSIGN_OR_RETURN(int64_t head_dim, text.Int("head_dim", 256));
  ASSIGN_OR_RETURN(int64_t kv_heads, text.Int("num_key_value_heads"));
  ASSIGN_OR_RETURN(int64_t global_head_dim, text.Int("global_head_dim", 512));
  ASSIGN_OR_RETURN(bool k_eq_v, text.Bool("attention_k_eq_v", false));
  ASSIGN_OR_RETURN(int64_t global_kv, text.Int("num_global_key_value_heads", kv_heads));
  if (n <= 0 || n > 1024) return absl::InvalidArgumentError("config.json: bad num_hidden_layers");
  std::vector<std::string> types;
  if (text.Has("layer_types")) {
    const Json& lt = text.raw()["layer_types"];
    if (!lt.is_array() || static_cast<int64_t>(lt.size()) != n) {
      return absl::InvalidArgumentError("config.json: layer_types must list num_hidden_layers types");
    }
    for (const Json& t : lt) types.push_back(t.is_string() ? t.get<std::string>() : "");
  } else {
    for (int64_t i = 0; i < n; ++i) types.push_back((i + 1) % 6 ? "sliding_attention" : "full_attention");
  }
  types.back() = "full_attention";  // as transformers: the last layer is always full
  const bool has_plc = text.Has("per_layer_config");
  ASSIGN_OR_RETURN(auto overrides, PerLayerOverrides(text, n));
  for (int64_t i = 0; i < n; ++i) {
    LayerConfig layer;
    if (types[i] != "sliding_attention" && types[i] != "full_attention") {
      return absl::InvalidArgumentError(absl::StrCat("config.json: layer_types[", i, "] unknown"));
    }
    layer.sliding = types[i] == "sliding_attention";
    layer.k_eq_v = k_eq_v && !layer.sliding;
    layer.head_dim = static_cast<int>(layer.sliding ? head_dim : global_head_dim);
    layer.num_kv_heads = static_cast<int>(layer.sliding || !k_eq_v ? kv_heads : global_kv);
    if (has_plc) {  // transformers 5.17 form: explicit overrides per layer index, nothing implied
      layer.head_dim = static_cast<int>(head_dim);
      layer.num_kv_heads = static_cast<int>(kv_heads);
      if (const Json* entry = overrides[i]; entry != nullptr) {
        Fields o(*entry, absl::StrCat(text.where(), ".per_layer_config.", i));
        ASSIGN_OR_RETURN(int64_t hd, o.Int("head_dim", layer.head_dim));
        ASSIGN_OR_RETURN(int64_t kvh, o.Int("num_key_value_heads", layer.num_kv_heads));
        layer.head_dim = static_cast<int>(hd);
        layer.num_kv_heads = static_cast<int>(kvh);
      }
    }
    if (layer.head_dim <= 0 || layer.head_dim % 2 || layer.num_kv_heads <= 0 ||
        cfg.num_heads % layer.num_kv_heads) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: layer ", i, ": bad head_dim/kv heads"));
    }
    ASSIGN_OR_RETURN(layer.rope, ParseRope(text, types[i].c_str(), layer.head_dim));
    cfg.layers.push_back(layer);
  }
  return absl::OkStatus();
}

absl::Status ParseText(const Fields& text, ModelConfig& cfg) {
  ASSIGN_OR_RETURN(int64_t vocab, text.Int("vocab_size"));
  ASSIGN_OR_RETURN(int64_t hidden, text.Int("hidden_size"));
  ASSIGN_OR_RETURN(int64_t inter, text.Int("intermediate_size"));
  ASSIGN_OR_RETURN(int64_t heads, text.Int("num_attention_heads"));
  ASSIGN_OR_RETURN(double eps, text.Num("rms_norm_eps", 1e-6));
  ASSIGN_OR_RETURN(int64_t window, text.Int("sliding_window", 1024));
  ASSIGN_OR_RETURN(int64_t max_pos, text.Int("max_position_embeddings", 131072));
  ASSIGN_OR_RETURN(std::string act, text.Str("hidden_activation", "gelu_pytorch_tanh"));
  ASSIGN_OR_RETURN(std::string bidir, text.Str("use_bidirectional_attention", "vision"));
  ASSIGN_OR_RETURN(int64_t shared, text.Int("num_kv_shared_layers", 0));
  ASSIGN_OR_RETURN(bool moe, text.Bool("enable_moe_block", false));
  ASSIGN_OR_RETURN(bool wide, text.Bool("use_double_wide_mlp", false));
  ASSIGN_OR_RETURN(bool bias, text.Bool("attention_bias", false));
  ASSIGN_OR_RETURN(int64_t ple, text.Int("hidden_size_per_layer_input", 0));
  if (act != "gelu_pytorch_tanh") return Refuse(text, "hidden_activation");
  if (shared != 0) return Refuse(text, "num_kv_shared_layers");
  if (moe) return Refuse(text, "enable_moe_block");
  if (wide) return Refuse(text, "use_double_wide_mlp");
  if (bias) return Refuse(text, "attention_bias");
  if (ple != 0) return Refuse(text, "hidden_size_per_layer_input");
  if (bidir != "vision") return Refuse(text, "use_bidirectional_attention (only \"vision\")");
  if (vocab <= 0 || hidden <= 0 || inter <= 0 || heads <= 0 || window <= 0 || vocab > (1 << 24)) {
    return absl::InvalidArgumentError("config.json: text_config sizes must be positive");
  }
  cfg.vocab_size = static_cast<int>(vocab);
  cfg.hidden_size = static_cast<int>(hidden);
  cfg.intermediate_size = static_cast<int>(inter);
  cfg.num_heads = static_cast<int>(heads);
  cfg.rms_eps = static_cast<float>(eps);
  cfg.sliding_window = static_cast<int>(window);
  cfg.info.max_context = max_pos;
  if (text.Has("final_logit_softcapping")) {
    ASSIGN_OR_RETURN(double cap, text.Num("final_logit_softcapping"));
    cfg.final_softcap = static_cast<float>(cap);
  }
  ASSIGN_OR_RETURN(int64_t pad, text.Int("pad_token_id", 0));
  ASSIGN_OR_RETURN(int64_t bos, text.Int("bos_token_id", 2));
  cfg.info.pad_id = static_cast<int32_t>(pad);
  cfg.info.bos_id = static_cast<int32_t>(bos);
  return ParseLayers(text, cfg);
}

absl::Status ParseMedia(const Fields& top, ModelConfig& cfg) {
  if (top.Has("vision_config")) {
    ASSIGN_OR_RETURN(Fields v, top.Object("vision_config"));
    ASSIGN_OR_RETURN(int64_t patch, v.Int("patch_size", 16));
    ASSIGN_OR_RETURN(int64_t pool, v.Int("pooling_kernel_size", 3));
    ASSIGN_OR_RETURN(int64_t dim, v.Int("mm_embed_dim", 3840));
    ASSIGN_OR_RETURN(int64_t out, v.Int("output_proj_dims", dim));
    ASSIGN_OR_RETURN(int64_t pos, v.Int("mm_posemb_size", 1120));
    ASSIGN_OR_RETURN(double eps, v.Num("rms_norm_eps", 1e-6));
    ASSIGN_OR_RETURN(int64_t soft, v.Int("num_soft_tokens", 280));
    if (out != dim) return Refuse(v, "output_proj_dims != mm_embed_dim");
    if (patch <= 0 || pool <= 0 || dim <= 0 || pos <= 0) return Refuse(v, "sizes");
    cfg.vision = {true, static_cast<int>(patch * pool * patch * pool * 3), static_cast<int>(dim),
                  static_cast<int>(pos), static_cast<float>(eps), 1e-5f};
    cfg.info.vision_soft_tokens = static_cast<int>(soft);
  }
  if (top.Has("audio_config")) {
    ASSIGN_OR_RETURN(Fields a, top.Object("audio_config"));
    ASSIGN_OR_RETURN(int64_t dim, a.Int("audio_embed_dim", 640));
    ASSIGN_OR_RETURN(double eps, a.Num("rms_norm_eps", 1e-6));
    if (dim <= 0) return Refuse(a, "audio_embed_dim");
    cfg.audio = {true, static_cast<int>(dim), static_cast<float>(eps)};
  }
  return absl::OkStatus();
}

absl::Status ParseTokenIds(const Fields& top, ModelConfig& cfg) {
  ModelInfo& info = cfg.info;
  auto id = [&](const char* key, int64_t def, int32_t& dst) -> absl::Status {
    ASSIGN_OR_RETURN(int64_t v, top.Int(key, def));
    if (v < 0 || v >= cfg.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: ", key, " = ", v, " outside the vocabulary"));
    }
    dst = static_cast<int32_t>(v);
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(id("boi_token_id", 255999, info.boi_id));
  RETURN_IF_ERROR(id("eoi_token_id", 258882, info.eoi_id));
  RETURN_IF_ERROR(id("image_token_id", 258880, info.image_id));
  RETURN_IF_ERROR(id("video_token_id", 258884, info.video_id));
  RETURN_IF_ERROR(id("boa_token_id", 256000, info.boa_id));
  RETURN_IF_ERROR(id("audio_token_id", 258881, info.audio_id));
  const char* eoa_key = top.Has("eoa_token_id") ? "eoa_token_id" : "eoa_token_index";
  RETURN_IF_ERROR(id(eoa_key, 258883, info.eoa_id));
  ASSIGN_OR_RETURN(info.stop_ids, top.Ints("eos_token_id"));
  return absl::OkStatus();
}

absl::Status ParseGenerationConfig(const std::string& path, ModelConfig& cfg) {
  std::ifstream probe(path);
  if (!probe) return absl::OkStatus();  // optional file
  ASSIGN_OR_RETURN(Json j, ReadJson(path));
  Fields g(j, "generation_config.json");
  ASSIGN_OR_RETURN(std::vector<int32_t> eos, g.Ints("eos_token_id"));
  if (!eos.empty()) cfg.info.stop_ids = eos;
  ASSIGN_OR_RETURN(std::vector<int32_t> suppress, g.Ints("suppress_tokens"));
  for (int32_t s : suppress) cfg.info.suppress_ids.push_back(s);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  ASSIGN_OR_RETURN(Json j, ReadJson(dir + "/config.json"));
  Fields top(j, "config.json");
  ModelConfig cfg;
  ASSIGN_OR_RETURN(cfg.info.model_type, top.Str("model_type"));
  if (cfg.info.model_type != "gemma4_unified") {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/config.json: unknown model_type \"",
                                                   cfg.info.model_type, "\" (expected gemma4_unified)"));
  }
  ASSIGN_OR_RETURN(Fields text, top.Object("text_config"));
  ASSIGN_OR_RETURN(cfg.num_heads, text.Int("num_attention_heads"));
  RETURN_IF_ERROR(ParseText(text, cfg));
  RETURN_IF_ERROR(ParseMedia(top, cfg));
  RETURN_IF_ERROR(ParseTokenIds(top, cfg));
  if (cfg.info.stop_ids.empty()) {
    ASSIGN_OR_RETURN(cfg.info.stop_ids, text.Ints("eos_token_id"));
  }
  RETURN_IF_ERROR(ParseGenerationConfig(dir + "/generation_config.json", cfg));
  // End-of-modality rows double as output rows: never sample them (spec §5.1, design §4).
  for (int32_t id : {cfg.info.eoi_id, cfg.info.eoa_id}) {
    if (std::find(cfg.info.suppress_ids.begin(), cfg.info.suppress_ids.end(), id) ==
        cfg.info.suppress_ids.end()) {
      cfg.info.suppress_ids.push_back(id);
    }
  }
  for (int32_t id : cfg.info.stop_ids) {
    if (id < 0 || id >= cfg.vocab_size) return absl::InvalidArgumentError("eos_token_id outside the vocabulary");
  }
  cfg.info.eos_id = cfg.info.stop_ids.empty() ? 1 : cfg.info.stop_ids.front();
  cfg.info.vocab_size = cfg.vocab_size;
  cfg.info.hidden_size = cfg.hidden_size;
  cfg.info.num_layers = static_cast<int>(cfg.layers.size());
  return cfg;
}

absl::StatusOr<ModelInfo> LoadModelInfo(const std::string& checkpoint_dir) {
  ASSIGN_OR_RETURN(ModelConfig cfg, LoadModelConfig(checkpoint_dir));
  return cfg.info;
}

}  // namespace avserve::engine
