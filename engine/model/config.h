// Typed model configuration parsed once from a checkpoint folder's config.json and
// generation_config.json (spec §1). Accepts both the published field names (global_head_dim,
// num_global_key_value_heads, attention_k_eq_v) and the per_layer_config form transformers 5.17 writes.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/api.h"
#include "engine/backend/backend.h"

namespace avserve::engine {

struct LayerConfig {
  bool sliding = true;      // sliding_attention (else full_attention)
  int head_dim = 0;
  int num_kv_heads = 0;
  bool k_eq_v = false;      // no v_proj: V is v_norm(raw K projection)
  RopeParams rope;
};

struct VisionConfig {
  bool present = false;
  int patch_dim = 0;        // (patch_size * pooling_kernel_size)^2 * 3 = 6912
  int embed_dim = 0;        // mm_embed_dim (= output_proj_dims)
  int posemb_size = 0;      // rows of the factorised position table
  float rms_eps = 1e-6f;    // pre-projection RMSNorm; LayerNorms use PyTorch's 1e-5 (spec §9.2)
  float ln_eps = 1e-5f;
};

struct AudioConfig {
  bool present = false;
  int frame_dim = 0;        // audio_embed_dim = samples per token (640)
  float rms_eps = 1e-6f;
};

struct ModelConfig {
  ModelInfo info;
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_heads = 0;
  float rms_eps = 1e-6f;
  int sliding_window = 0;
  float final_softcap = 0.0f;  // 0: none
  bool vision_blocks = true;   // use_bidirectional_attention == "vision"
  std::vector<LayerConfig> layers;
  VisionConfig vision;
  AudioConfig audio;
};

// Reads `dir`/config.json and, when present, `dir`/generation_config.json. Errors name the file and
// the field; unsupported variants (MoE, KV sharing, per-layer inputs, other activations) are refused.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

}  // namespace avserve::engine
