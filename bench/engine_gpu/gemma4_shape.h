// The Gemma 4 12B decoder at its real shape (spec §1.1), on the GPU with random bf16 weights, written
// directly against the CUDA ops. It is the benchmark's stand-in for the engine's model: same ops, same
// order, same rounding points as engine/model, with the engine's two load-time fusions (q|k|v and gate|up
// concatenated into one GEMM each).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/cuda/cuda_raii.h"

namespace avserve::bench {

using engine::cuda::CublasHandle;
using engine::cuda::DeviceBuffer;
using bf16 = __nv_bfloat16;

struct ModelShape {
  int hidden = 3840, intermediate = 15360, layers = 48, heads = 16, vocab = 262144;
  int sliding_kv_heads = 8, sliding_head_dim = 256, full_head_dim = 512, window = 1024;
  bool IsFull(int layer) const { return layer % 6 == 5; }
  int HeadDim(int layer) const { return IsFull(layer) ? full_head_dim : sliding_head_dim; }
  int KvHeads(int layer) const { return IsFull(layer) ? 1 : sliding_kv_heads; }
  // q | k (| v on sliding layers) rows of the fused projection.
  int QkvRows(int layer) const {
    const int q = heads * HeadDim(layer), kv = KvHeads(layer) * HeadDim(layer);
    return IsFull(layer) ? q + kv : q + 2 * kv;
  }
};

struct LayerWeights {
  bf16* qkv;       // [QkvRows, hidden]
  bf16* o;         // [hidden, heads * head_dim]
  bf16* gate_up;   // [2 * intermediate, hidden]
  bf16* down;      // [hidden, intermediate]
  bf16* norms;     // [4, hidden]: input, post-attention, pre-ffn, post-ffn
  bf16* q_norm;    // [head_dim]
  bf16* k_norm;    // [head_dim]
  bf16* scalar;    // [1]
  bf16* k_cache;   // [capacity, kv_heads, head_dim]
  bf16* v_cache;
  int capacity;    // ring (sliding) or max context (full)
};

class Gemma4Shape {
 public:
  // Allocates weights (random), KV caches for `max_context` and activations for chunks of `chunk` tokens.
  static absl::StatusOr<Gemma4Shape> Create(const ModelShape& shape, int max_context, int chunk, int max_batch);

  // Runs the decoder over tokens [pos0, pos0 + n) (n <= chunk), ids already in ids(); the last row's logits
  // are soft-capped and its greedy token written to next_id(). Enqueued on `stream`.
  void Forward(int pos0, int n, cudaStream_t stream);
  // Prefill of `length` tokens in chunks.
  void Prefill(int length, cudaStream_t stream);

  int32_t* ids() const { return ids_.get(); }
  int32_t* next_id() const { return next_id_.get(); }
  size_t weight_bytes() const { return weight_bytes_; }
  const CublasHandle& cublas() const { return cublas_; }
  int num_sms() const { return num_sms_; }

 private:
  void Layer(int l, int pos0, int n, cudaStream_t stream);
  void Gemm(const bf16* a, const bf16* w, void* c, int64_t m, int64_t n, int64_t k, cudaStream_t stream,
            bool c_fp32 = false);

  ModelShape shape_;
  int chunk_ = 0, max_context_ = 0, num_sms_ = 0;
  size_t weight_bytes_ = 0;
  CublasHandle cublas_;
  DeviceBuffer<bf16> weights_, caches_;
  DeviceBuffer<bf16> h_, xn_, qkv_, q_, attn_, proj_, gate_up_, act_, logits_bf16_;
  DeviceBuffer<float> logits_;
  DeviceBuffer<int32_t> ids_, positions_, next_id_;
  DeviceBuffer<unsigned char> attention_ws_;  // split-KV partials or GEMM-attention scores
  bf16* embed_ = nullptr;       // [vocab, hidden]
  bf16* final_norm_ = nullptr;  // [hidden]
  std::vector<LayerWeights> layers_;
};

// p[0, n) = uniform values in [-amp, amp) from a hash of the index and seed, on the default stream.
void FillRandomBf16(bf16* p, size_t n, float amp, uint64_t seed);

}  // namespace avserve::bench
