// The engine's public surface: the only engine header that pipeline/ and service/ include
// (besides engine/model/tokenizer.h). Contract between the layers; extend, don't break.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace avserve::engine {

// Token type ids as transformers' mm_token_type_ids: 0 text, 1 image, 2 video, 3 audio.
enum class TokenType : uint8_t { kText = 0, kImage = 1, kVideo = 2, kAudio = 3 };

// A piece of the prompt, appended to a Sequence in order. Rows of vision_patches / audio_frames
// are consumed, in order, by the positions whose type is image/video resp. audio.
// A maximal run of image/video positions is one bidirectional block; a chunk never splits one.
struct PromptChunk {
  std::vector<int32_t> ids;               // [n] token ids (placeholder ids at media positions)
  std::vector<TokenType> types;           // [n]
  std::vector<float> vision_patches;      // [num_vision, 6912] HWC patch vectors in [0,1]
  std::vector<int32_t> vision_positions;  // [num_vision, 2] (x = column, y = row) in the patch grid
  std::vector<float> audio_frames;        // [num_audio, 640] 16 kHz mono samples
  size_t size() const { return ids.size(); }
};

// A chunk of text tokens only (a question, a chat turn).
inline PromptChunk TextChunk(std::vector<int32_t> ids) {
  PromptChunk chunk;
  chunk.types.assign(ids.size(), TokenType::kText);
  chunk.ids = std::move(ids);
  return chunk;
}

// Ids and sizes read from the checkpoint's config.json / generation_config.json (never hard-coded:
// small test checkpoints remap them).
struct ModelInfo {
  std::string model_type;                 // "gemma4_unified"
  int vocab_size = 0;
  int hidden_size = 0;
  int num_layers = 0;
  int64_t max_context = 0;                // max_position_embeddings
  int32_t pad_id = 0, bos_id = 2, eos_id = 1;
  int32_t boi_id = 0, eoi_id = 0, image_id = 0, video_id = 0;  // <|image> <image|> <|image|> <|video|>
  int32_t boa_id = 0, eoa_id = 0, audio_id = 0;                // <|audio> <audio|> <|audio|>
  std::vector<int32_t> stop_ids;          // generation_config eos_token_id (falls back to config)
  std::vector<int32_t> suppress_ids;      // never sampled (eoi, eoa at least)
  int vision_soft_tokens = 280;           // default image budget
};

// Parses only config.json (+ generation_config.json when present) of a checkpoint folder.
absl::StatusOr<ModelInfo> LoadModelInfo(const std::string& checkpoint_dir);

enum class BackendKind { kCpu, kCuda };

// The default prefill step, which is also the pipeline's default chunk (pipeline/interleaver.h), so that each
// chunk of a video's token stream is one step. At the 12B shape on an H200 (bench/RESULTS.md, session 10): 32K
// tokens prefill in 1.81 s in steps of 2,048 against 1.92 s in steps of 1,280 (4,096: 1.77 s; 8,192: 1.75 s); the
// sliding layers' rings then hold 3,071 positions, 983 MB a sequence (1,280: 737 MB; 8,192: 2.95 GB).
inline constexpr int kDefaultPrefillChunkTokens = 2048;

struct EngineOptions {
  std::string checkpoint_dir;
  BackendKind backend = BackendKind::kCpu;
  int num_threads = 0;                    // CPU backend; 0 = all cores
  bool bidirectional_all_layers = false;  // vision blocks on full layers too (HF plain-forward variant)
  int64_t max_context = 0;                // 0: the model's max_position_embeddings
  // Prefill runs in steps of at most this many tokens; sliding-layer KV rings hold
  // sliding_window - 1 + this many positions. A vision block longer than this is refused.
  int prefill_chunk_tokens = kDefaultPrefillChunkTokens;
  // A fork's sliding-layer rings start with room for steps of this many tokens (a question, its answer's tokens)
  // instead of prefill_chunk_tokens; its first longer step grows them (engine/model/kv_cache.cc, Note [Fork
  // rings]). At the 12B shape each question fork then holds 0.42 GB of rings instead of 1.0 GB.
  int fork_chunk_tokens = 256;
  // Called on the loading thread after each weight tensor is validated and, on a GPU, uploaded: bytes done so
  // far and in all (a 12B checkpoint is ~24 GB: its upload is the time a server waits before serving).
  std::function<void(int64_t bytes_done, int64_t bytes_total)> on_load_progress;
  // After loading, Load runs a throwaway request of this many prompt positions (a video frame, audio frames and
  // text), two generated tokens, and two questions forked from it decoding together. So the GPU's one-time costs
  // (kernels loaded at their first launch, GEMM algorithm queries, workspace allocations, decode graphs) fall on
  // the load instead of the first request: about 0.19 s of the 12B's first 8K prefill on an H200
  // (bench/RESULTS.md, session 16). 0: none. A warm-up that finds too little memory is skipped; any other failure
  // fails the load.
  int warmup_tokens = 0;
};

struct SamplingOptions {
  float temperature = 0.0f;               // 0: greedy
  int top_k = 0;                          // 0: off
  float top_p = 1.0f;                     // 1: off
  uint64_t seed = 0;
  int max_new_tokens = 256;
};

// The state of one prompt (KV cache + position). Not thread-safe; one owner at a time.
class Sequence {
 public:
  virtual ~Sequence() = default;
  virtual int64_t length() const = 0;        // positions consumed so far
  virtual size_t memory_bytes() const = 0;   // KV state held
  // Appends a prompt chunk; `cancel` (may be null) is polled between layers/chunks:
  // on cancellation returns CANCELLED and the sequence must be discarded.
  virtual absl::Status Prefill(const PromptChunk& chunk, const std::atomic<bool>* cancel) = 0;
  // An independent copy of the state (prefix reuse: prefill a video once, fork per question).
  virtual absl::StatusOr<std::unique_ptr<Sequence>> Fork() const = 0;

  // Logits (fp32, after the soft-cap) left by the last Prefill or Generate step: [vocab] for the
  // last position; or, after set_keep_all_logits(true), [positions, vocab] for every position
  // prefilled since then (tests and tools; the call clears what was kept).
  virtual const std::vector<float>& logits() const {
    static const std::vector<float> kNone;
    return kNone;
  }
  virtual void set_keep_all_logits(bool keep) {}
};

class Engine {
 public:
  virtual ~Engine() = default;
  static absl::StatusOr<std::unique_ptr<Engine>> Load(const EngineOptions& options);

  virtual const ModelInfo& info() const = 0;
  virtual std::string backend_name() const = 0;
  // What the load's warm-up took (EngineOptions::warmup_tokens), in seconds; 0 when none ran.
  virtual double warmup_seconds() const { return 0.0; }
  // A fresh, empty sequence able to hold `max_tokens` positions (RESOURCE_EXHAUSTED if it can't).
  virtual absl::StatusOr<std::unique_ptr<Sequence>> NewSequence(int64_t max_tokens) = 0;
  // Samples after the last prefilled position, then feeds each sampled token back, until a stop id,
  // max_new_tokens, `on_token` returning false, or cancellation. Stop ids are not passed to on_token.
  // Every emitted token becomes part of the sequence (the last one is fed lazily, by the next
  // Prefill or Generate on it); a stop id is not.
  virtual absl::Status Generate(Sequence& seq, const SamplingOptions& options,
                                const std::function<bool(int32_t)>& on_token,
                                const std::atomic<bool>* cancel) = 0;
  // Generate for several sequences in lockstep (e.g. questions forked from one media prefix): each
  // iteration advances every running sequence by one token; on_token(index, token). Sequence i
  // samples with seed options.seed + i. The default runs them one after another.
  virtual absl::Status GenerateBatch(const std::vector<Sequence*>& seqs, const SamplingOptions& options,
                                     const std::function<bool(size_t, int32_t)>& on_token,
                                     const std::atomic<bool>* cancel) {
    for (size_t i = 0; i < seqs.size(); ++i) {
      SamplingOptions o = options;
      o.seed = options.seed + i;
      absl::Status st = Generate(*seqs[i], o, [&](int32_t t) { return on_token(i, t); }, cancel);
      if (!st.ok()) return st;
    }
    return absl::OkStatus();
  }
};

}  // namespace avserve::engine
