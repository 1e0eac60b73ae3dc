// The Gemma4Unified weights as backend tensors, checked against the config before any compute
// (spec §7.1). On a backend that shares host memory the tensors point into the mapped files.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/model/config.h"
#include "engine/model/safetensors.h"

namespace avserve::engine {

// On a device backend (one that does not share host memory) the projections that read the same input are
// stored together: q_proj, k_proj, v_proj are row ranges of qkv_proj, gate_proj, up_proj of gate_up_proj, so one
// product computes them all. Elsewhere (the CPU backend maps the checkpoint) the fused tensors are empty.
struct LayerWeights {
  Tensor input_norm, post_attn_norm, pre_ffn_norm, post_ffn_norm;  // [H]
  Tensor q_proj;    // [heads * D, H]
  Tensor k_proj;    // [kv_heads * D, H]
  Tensor v_proj;    // [kv_heads * D, H]; empty (data == nullptr) on k_eq_v layers
  Tensor qkv_proj;  // [(heads + 2 * kv_heads) * D, H] ((heads + kv_heads) * D on k_eq_v layers), or empty
  Tensor o_proj;    // [H, heads * D]
  Tensor q_norm, k_norm;  // [D]
  Tensor gate_proj, up_proj;  // [F, H]
  Tensor gate_up_proj;        // [2F, H], or empty
  Tensor down_proj;           // [H, F]
  float layer_scalar = 1.0f;
};

struct VisionWeights {
  Tensor ln1_w, ln1_b;         // [P]
  Tensor dense_w;              // [E, P]
  Tensor dense_b;              // [E]
  Tensor ln2_w, ln2_b;         // [E]
  Tensor pos_table;            // [posemb, 2, E]
  Tensor pos_norm_w, pos_norm_b;  // [E]
  Tensor proj;                 // [H, E]
};

struct ModelWeights {
  DType act_dtype = DType::kBF16;  // activations/KV: bf16 for bf16 weights, else fp32
  Tensor embed;                    // [V, H] (also the output head)
  Tensor final_norm;               // [H]
  std::vector<LayerWeights> layers;
  VisionWeights vision;            // empty when the config has no vision tower
  Tensor audio_proj;               // [H, 640]
  // Owners: the mapped checkpoint and, on a device backend, the uploaded copies.
  std::unique_ptr<Checkpoint> checkpoint;
  std::vector<std::unique_ptr<Buffer>> device_copies;
};

// Bytes done and in all, after each tensor (EngineOptions::on_load_progress).
using LoadProgress = std::function<void(int64_t bytes_done, int64_t bytes_total)>;

// Validates every tensor (presence, no extras, shape, dtype) before it copies any, then makes backend tensors
// (uploads on a device backend), reporting progress when `progress` is set.
absl::StatusOr<ModelWeights> LoadWeights(const std::string& dir, const ModelConfig& config,
                                         Backend& backend, const LoadProgress& progress = nullptr);

}  // namespace avserve::engine
