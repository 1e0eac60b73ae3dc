// The Gemma4Unified forward pass, written once against Backend (spec §2.2, §3, §5; design.md §4).
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "engine/api.h"
#include "engine/backend/backend.h"
#include "engine/model/config.h"
#include "engine/model/kv_cache.h"
#include "engine/model/weights.h"

namespace avserve::engine {

// One forward step over positions [pos0, pos0 + n) of a sequence. Media rows belong to the
// image/video (vision) and audio positions of this step, in order.
struct ForwardInput {
  const int32_t* ids = nullptr;         // [n]
  const TokenType* types = nullptr;     // [n]
  int64_t n = 0;
  int64_t pos0 = 0;
  const float* vision = nullptr;        // [num_vision, patch_dim], values in [0, 1]
  const int32_t* vision_pos = nullptr;  // [num_vision, 2] (x, y)
  int64_t num_vision = 0;
  const float* audio = nullptr;         // [num_audio, frame_dim]
  int64_t num_audio = 0;
  bool all_logits = false;              // logits of every position, else only the last
  // End of the forward pass this step is part of (a Prefill call cut into steps); 0: pos0 + n.
  // Only rounding depends on it (AttentionParams::pass_key_count).
  int64_t pass_end = 0;
  const std::atomic<bool>* cancel = nullptr;
};

// A step's fp32 soft-capped logits, left on the backend: greedy decoding brings back only token ids. Never written
// after the step, so the sequences of a batched step share one buffer (row b is sequence b's).
struct StepLogits {
  std::shared_ptr<const Buffer> buffer;
  Tensor rows;  // f32 [rows, vocab], a view of buffer
};

class Gemma4Model {
 public:
  Gemma4Model(Backend& backend, ModelConfig config, ModelWeights weights, bool vision_blocks_all_layers);

  const ModelConfig& config() const { return config_; }
  DType act_dtype() const { return weights_.act_dtype; }
  Backend& backend() { return backend_; }

  // Runs the decoder, appends this step's K/V to `cache` and returns the logits of the last position (all of
  // them with in.all_logits). Inputs must be validated by the caller (ids in range, media counts). The backend
  // may still be working when it returns; Download/GreedyTokens wait.
  absl::StatusOr<StepLogits> Forward(const ForwardInput& in, KvCache& cache);
  // Forward, with the logits [rows, vocab] copied to the host.
  absl::Status Forward(const ForwardInput& in, KvCache& cache, std::vector<float>& logits);

  // One decode step of several sequences at once: text token ids[b] at position pos[b] of the
  // sequence whose cache is caches[b]. The matrix products run over all rows together (one read
  // of the weights per step); K/V writes and attention go per sequence. Logits: [batch, vocab].
  absl::StatusOr<StepLogits> DecodeBatch(const std::vector<int32_t>& ids, const std::vector<int64_t>& pos,
                                         const std::vector<KvCache*>& caches);
  absl::Status DecodeBatch(const std::vector<int32_t>& ids, const std::vector<int64_t>& pos,
                           const std::vector<KvCache*>& caches, std::vector<float>& logits);

  // Logits rows [n, vocab] (of a StepLogits) copied to the host as n·vocab floats.
  absl::Status Download(const Tensor& rows, std::vector<float>& out);
  // The greedy token of each row [n, vocab]: Sampler's greedy choice with the checkpoint's suppress ids, made
  // on the backend; only the n ids are copied back.
  absl::StatusOr<std::vector<int32_t>> GreedyTokens(const Tensor& rows);

 private:
  class Scratch;
  // Decode steps of up to this many sequences go to the backend as recorded runs of layers (Layers).
  static constexpr int64_t kMaxGraphRows = 16;
  // Rows [row0, row0 + n) of a step are positions [pos0, pos0 + n) of the sequence of `cache`;
  // pass_end as in ForwardInput (resolved, never 0).
  struct RowSpan {
    int64_t row0 = 0, n = 0, pos0 = 0, pass_end = 0;
    KvCache* cache = nullptr;
  };
  absl::Status EmbedInputs(const ForwardInput& in, const Tensor& x, Scratch& s);
  absl::Status EmbedVision(const ForwardInput& in, const Tensor& rows, const Tensor& x, Scratch& s);
  absl::Status EmbedAudio(const ForwardInput& in, const Tensor& rows, const Tensor& x, Scratch& s);
  absl::Status Layers(const Tensor& x, const Tensor& positions, const Tensor* blocks, const std::vector<RowSpan>& spans,
                      const std::atomic<bool>* cancel);
  absl::Status Layer(int l, const Tensor& x, const Tensor& xn, const Tensor& positions, const Tensor* blocks,
                     const std::vector<RowSpan>& spans, Scratch& s);
  // Raw projections of one layer, [n, heads, D] each (strided views of one product when the weights are fused);
  // v is k on k_eq_v layers.
  struct Qkv {
    Tensor q, k, v;
  };
  absl::StatusOr<Qkv> Project(int l, const Tensor& xn, Scratch& s);
  // Destinations of the normed K/V rows [n, Hkv, D]: cache rows (in_cache) or temporaries.
  struct KvRows {
    Tensor k, v;
    bool in_cache = false;
  };
  absl::StatusOr<KvRows> KvTargets(int l, const Qkv& raw, const std::vector<RowSpan>& spans, Scratch& s);
  absl::Status SelfAttention(int l, const Tensor& xn, const Tensor& positions, const Tensor* blocks,
                             const std::vector<RowSpan>& spans, Scratch& s, const Tensor& att);
  absl::Status Mlp(int l, const Tensor& xn, Scratch& s, const Tensor& out);
  AttentionParams AttendParams(int l, const RowSpan& span) const;
  void Attend(int l, const Tensor& q, const Tensor* blocks, const RowSpan& span, const Tensor& att);
  absl::StatusOr<StepLogits> Logits(const Tensor& x, bool all, Scratch& s);

  Backend& backend_;
  ModelConfig config_;
  ModelWeights weights_;
  bool blocks_all_layers_;
  // The suppress ids on the backend, ascending and within the vocabulary (ArgmaxRows' form); the status of
  // their upload, reported by GreedyTokens.
  std::unique_ptr<Buffer> suppress_buffer_;
  Tensor suppress_;
  absl::Status suppress_status_;
};

}  // namespace avserve::engine
