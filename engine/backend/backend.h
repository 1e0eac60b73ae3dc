// The compute interface the model is written against (design.md §4, style.md §7).
//
// One model definition (engine/model/gemma4.cc) calls these coarse ops; each backend (cpu/, cuda/)
// implements them. Tensors are non-owning views; memory comes from Backend::Allocate.
//
// Numerics contract (every backend, checked against the CPU backend by parity tests):
//  * Inputs are read in their dtype and widened to fp32; accumulation is fp32.
//  * An op rounds ONCE to the output dtype at its end, unless its comment names intermediate
//    rounding points (these reproduce transformers' bf16 rounding, spec §5.7).
//  * Row-wise ops treat a tensor as [rows, last_dim]; the last dim must be contiguous
//    (strides[rank-1] == 1), rows may be strided.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/api.h"

namespace avserve::engine {

enum class DType : uint8_t { kF32, kBF16, kF16, kI32, kCount };
enum class Device : uint8_t { kCpu, kCuda, kCount };

// Bytes per element.
constexpr size_t DTypeSize(DType t) { return t == DType::kBF16 || t == DType::kF16 ? 2 : 4; }
const char* DTypeName(DType t);

// A non-owning strided view. Shapes have up to 4 dims; strides are in ELEMENTS.
struct Tensor {
  static constexpr int kMaxRank = 4;
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  int rank = 0;
  std::array<int64_t, kMaxRank> shape{};
  std::array<int64_t, kMaxRank> strides{};

  // A contiguous (row-major) view of `data` with `shape`.
  static Tensor Contiguous(void* data, DType dtype, Device device, std::initializer_list<int64_t> shape);

  int64_t dim(int i) const { return shape[i < 0 ? rank + i : i]; }
  int64_t numel() const;
  bool is_contiguous() const;
  size_t bytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  // Rows when viewed as [rows, last_dim] (product of all leading dims).
  int64_t rows() const { return rank == 0 ? 1 : numel() / shape[rank - 1]; }
  // Same storage, new shape; requires a contiguous tensor and equal numel (checked).
  Tensor Reshape(std::initializer_list<int64_t> new_shape) const;
  // Rows [begin, end) of dim 0 (shares storage).
  Tensor Slice(int64_t begin, int64_t end) const;
  // Columns [begin, end) of the last dim (shares storage; the rows keep their stride).
  Tensor Columns(int64_t begin, int64_t end) const;
  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
};

// Memory owned by a backend; freed on destruction. Move-only through unique_ptr.
class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual void* data() const = 0;
  virtual size_t bytes() const = 0;
  virtual Device device() const = 0;
  // A contiguous view of the start of this buffer (checked to fit).
  Tensor View(DType dtype, std::initializer_list<int64_t> shape) const;
};

// RoPE flavour ("rotate half" pairing: dim j pairs with j + head_dim/2).
// Frequency of pair j: theta^(-2j/head_dim) for j < rotated_pairs, 0 (identity) otherwise.
//  * default (sliding layers): rotated_pairs = head_dim/2.
//  * proportional (full layers): rotated_pairs = partial_rotary_factor * head_dim / 2; the
//    exponent's denominator stays the full head_dim (spec §5.4).
struct RopeParams {
  float theta = 10000.0f;
  int head_dim = 0;
  int rotated_pairs = 0;
};

// Which keys a query row may see (spec §5.5). Query row i has absolute position q_pos_start + i.
// The KV views hold positions [kv_pos_begin, kv_pos_end); position p lives in row p % kv_capacity
// (a ring for sliding layers; kv_capacity >= kv_pos_end for full storage). The current chunk's
// keys must already be written (kv_pos_end >= q_pos_start + num_queries).
// Visible(q, k) for a key k in range:
//   causal  = k <= q
//   window  = sliding_window == 0 || k > q - sliding_window
//   block   = q_block_ids && k >= q_pos_start && id(q) >= 0 && id(q) == id(k)
//             (id(p) = q_block_ids[p - q_pos_start]: blocks never straddle chunks)
//   block_or_windowed_causal == false:  window && (causal || block)    [documented HF intent]
//   block_or_windowed_causal == true:   (window && causal) || block    [HF plain-forward variant]
struct AttentionParams {
  int64_t q_pos_start = 0;
  int64_t kv_pos_begin = 0;
  int64_t kv_pos_end = 0;
  int64_t kv_capacity = 0;
  int sliding_window = 0;
  bool block_or_windowed_causal = false;
  float scale = 1.0f;  // Gemma 4: 1.0 (q/k norms replace 1/sqrt(d))
  // Keys [0, pass_key_count) take part in the whole forward pass this step belongs to (>= kv_pos_end;
  // 0 means kv_pos_end). Changes rounding only: backends that reproduce PyTorch's CPU attention
  // pick each key's exp from it (engine/backend/torch_softmax.h).
  int64_t pass_key_count = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string Name() const = 0;
  virtual Device device() const = 0;
  // True when host pointers (e.g. mmapped weights) can be used as tensors directly.
  virtual bool SharesHostMemory() const = 0;
  // True when a forward step's rounding depends on where the step ends (the CPU reference
  // reproduces PyTorch's CPU attention, whose exp per key depends on the pass's key count). The
  // engine then recomputes the unaligned tail of each Prefill call with the next call, so that any
  // split of a prompt rounds as one pass over it would (Note [Provisional tail] in engine.cc).
  virtual bool RoundingDependsOnStepEnd() const { return false; }

  // Memory. Allocation failure is RESOURCE_EXHAUSTED. Contents are uninitialised.
  virtual absl::StatusOr<std::unique_ptr<Buffer>> Allocate(size_t bytes) = 0;
  // Memory for KV storage that forks may share (ForkBuffer); the same contract as Allocate otherwise.
  virtual absl::StatusOr<std::unique_ptr<Buffer>> AllocateShareable(size_t bytes) { return Allocate(bytes); }
  // A fork's KV storage: a buffer of src's size whose first prefix_bytes (even) hold src's values, the rest
  // uninitialised. Neither buffer may write below prefix_bytes afterwards, so a backend may map one copy of those
  // bytes into both instead of copying them (the CUDA backend does: Note [Forked KV pages] in
  // engine/backend/cuda/page_buffer.h). src comes from this backend. The default allocates and copies.
  virtual absl::StatusOr<std::unique_ptr<Buffer>> ForkBuffer(const Buffer& src, size_t prefix_bytes);
  // Copies `bytes` of host memory into dst (contiguous), and back.
  virtual absl::Status Upload(const void* host, size_t bytes, const Tensor& dst) = 0;
  virtual absl::Status Download(const Tensor& src, void* host, size_t bytes) = 0;
  virtual void Synchronize() = 0;

  // ---- Ops. Shapes are checked with AVSERVE_CHECK (a mismatch is a programming error). ----

  // y[n, m] = x[n, k] · w[m, k]ᵀ (+ bias[m]). w may be bf16/f16/f32; fp32 accumulate, bias added
  // before the single rounding to y's dtype.
  virtual void MatMul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) = 0;
  // Row-wise y = x · (mean(x²) + eps)^-1/2 (· weight when weight != nullptr). In place allowed.
  virtual void RmsNorm(const Tensor& x, const Tensor* weight, float eps, const Tensor& y) = 0;
  // Row-wise y = (x - mean) / sqrt(var + eps) · weight + bias (biased variance). In place allowed.
  virtual void LayerNorm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps,
                         const Tensor& y) = 0;
  // In place on x[n, heads, head_dim]; positions[n] int32. cos/sin computed in fp32 from
  // angle = pos · freq (fp32), rounded to x's dtype; then x·cos and rotate_half(x)·sin and their
  // sum each rounded to x's dtype (spec §5.7 #4).
  virtual void Rope(const Tensor& x, const Tensor& positions, const RopeParams& params) = 0;
  // out[n, Hq, D] = softmax(q·kᵀ·scale + mask) · v with GQA (query head h reads kv head
  // h / (Hq/Hkv)). q[n, Hq, D]; k, v[kv_capacity, Hkv, D]. fp32 scores and softmax statistics;
  // as in flash attention, the probabilities are rounded to V's dtype before P·V (fp32 accumulate)
  // while the softmax denominator sums the unrounded values; one rounding of the output. One exception: the CUDA
  // backend's prefill path for one KV head stores the scores in fp16 between its two products (11 significant bits;
  // Note [fp16 scores] in cuda/ops/gemm_attention.cu).
  // q_block_ids: [n] int32 or nullptr (no vision blocks in this chunk).
  virtual void Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* q_block_ids,
                         const AttentionParams& params, const Tensor& out) = 0;
  // out = round(round(gelu_tanh(gate)) · up) (spec §5.7 #7). In place on gate allowed.
  virtual void GeluTanhMul(const Tensor& gate, const Tensor& up, const Tensor& out) = 0;
  // out = a + b (same shape). In place allowed.
  virtual void Add(const Tensor& a, const Tensor& b, const Tensor& out) = 0;
  // out = x · s. In place allowed.
  virtual void Scale(const Tensor& x, float s, const Tensor& out) = 0;
  // out[n, d] = table[ids[i]] · scale (one rounding; pass scale already rounded to table dtype).
  // ids: [n] int32, each in [0, table rows) (checked by the caller).
  virtual void Embed(const Tensor& table, const Tensor& ids, float scale, const Tensor& out) = 0;
  // out[n, d] = x + round(table[pos[i,0], 0, :] + table[pos[i,1], 1, :]); table [P, 2, d],
  // positions [n, 2] int32 (x = column, y = row). The sum of the two rows is rounded to x's dtype
  // before the add (spec §2.2 step 4). In place allowed.
  virtual void AddPosition2d(const Tensor& x, const Tensor& table, const Tensor& positions,
                             const Tensor& out) = 0;
  // out = cap · tanh(x / cap), each of the three steps rounded to out's dtype.
  virtual void Softcap(const Tensor& x, float cap, const Tensor& out) = 0;
  // out = x converted to out's dtype (same shape; strided rows allowed).
  virtual void Convert(const Tensor& x, const Tensor& out) = 0;
  // out[r] = the greedy token of row r of logits [rows, V] (f32; strided rows allowed): the largest value among
  // the ids that are not NaN and not suppressed, the lowest such id on ties (-0 equals +0, -inf may win); -1
  // where no id is left. Exactly Sampler's greedy choice (engine/backend/argmax.h), so greedy decoding brings back
  // ids instead of logits. suppressed: [n] int32, ascending, each in [0, V); none when suppressed.data is null.
  // out: [rows] int32.
  virtual void ArgmaxRows(const Tensor& logits, const Tensor& suppressed, const Tensor& out) = 0;
  // ---- Fused sequences. The defaults run the plain ops above; a backend overrides one only to save passes
  // over memory and launches, keeping the plain sequence's rounding points. ----

  // y = Rope(RmsNorm(x) · weight) (the q and k norms; in place allowed).
  virtual void RmsNormRope(const Tensor& x, const Tensor& weight, float eps, const Tensor& positions,
                           const RopeParams& rope, const Tensor& y) {
    RmsNorm(x, &weight, eps, y);
    Rope(y, positions, rope);
  }
  // The q, k and v norms of an attention step: q_out = Rope(RmsNorm(q) · q_weight), v_out = RmsNorm(v) (no
  // weight), k_out = Rope(RmsNorm(k) · k_weight), in this order (v may be the raw k that k_out overwrites).
  virtual void QkvNorms(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& q_weight,
                        const Tensor& k_weight, float eps, const Tensor& positions, const RopeParams& rope,
                        const Tensor& q_out, const Tensor& k_out, const Tensor& v_out) {
    RmsNormRope(q, q_weight, eps, positions, rope, q_out);
    RmsNorm(v, nullptr, eps, v_out);
    RmsNormRope(k, k_weight, eps, positions, rope, k_out);
  }
  // residual = residual + RmsNorm(x) · weight, then residual = residual · scale when `scaled` (the post norms
  // and the layer scalar). x is overwritten with its norm by the default.
  virtual void RmsNormAddTo(const Tensor& x, const Tensor& weight, float eps, const Tensor& residual, bool scaled,
                            float scale) {
    RmsNorm(x, &weight, eps, x);
    Add(residual, x, residual);
    if (scaled) Scale(residual, scale, residual);
  }
  // RmsNormAddTo, then next_out = RmsNorm(residual) · next_weight over the updated (rounded) residual: a post norm
  // and residual add followed by the stream's next norm (pre-FFN, or the next layer's input norm). next_out may not
  // alias residual or x. x is overwritten with its norm by the default.
  virtual void RmsNormAddToNorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& residual, bool scaled,
                                float scale, const Tensor& next_weight, const Tensor& next_out) {
    RmsNormAddTo(x, weight, eps, residual, scaled, scale);
    RmsNorm(residual, &next_weight, eps, next_out);
  }

  // h [n, F] = GeluTanhMul(gate, up) of gate | up = MatMul(x, w) (the MLP's first product, w [2F, H]: the gate
  // rows, then the up rows). gate_up [n, 2F] is scratch: the default writes the product there. A fused version
  // keeps the default's rounding points: each sum rounded to the activation type, then GeluTanhMul's.
  virtual void MatMulGeluTanhMul(const Tensor& x, const Tensor& w, const Tensor& gate_up, const Tensor& h) {
    MatMul(x, w, nullptr, gate_up);
    const int64_t f = gate_up.dim(-1) / 2;
    GeluTanhMul(gate_up.Columns(0, f), gate_up.Columns(f, 2 * f), h);
  }

  // One decode step of several sequences (batched questions): row b of q [B, Hq, D], k_new and v_new [B, Hkv, D]
  // belongs to seqs[b], whose new position is seqs[b].params.q_pos_start (one query each, no vision blocks).
  // Appends each K/V row to its sequence's cache, then attends every row over its own cache.
  struct DecodeKv {
    Tensor k, v;  // the sequence's cache of this layer, [kv_capacity, Hkv, D]
    AttentionParams params;
    // Positions [0, shared_prefix) of this cache hold the same K/V as those of seqs[0]'s cache (forks of one
    // snapshot), which has the same capacity. A backend may read them from seqs[0]'s cache, once for the whole
    // batch, where that cache still holds them (a ring keeps its last kv_capacity positions); 0 shares nothing.
    // The plain path ignores it.
    int64_t shared_prefix = 0;
  };
  virtual void AttendDecodeRows(const Tensor& q, const Tensor& k_new, const Tensor& v_new,
                                const std::vector<DecodeKv>& seqs, const Tensor& out) {
    for (size_t b = 0; b < seqs.size(); ++b) {
      const int64_t r = static_cast<int64_t>(b);
      CopyRowsToRing(k_new.Slice(r, r + 1), seqs[b].k, seqs[b].params.q_pos_start);
      CopyRowsToRing(v_new.Slice(r, r + 1), seqs[b].v, seqs[b].params.q_pos_start);
      Attention(q.Slice(r, r + 1), seqs[b].k, seqs[b].v, nullptr, seqs[b].params, out.Slice(r, r + 1));
    }
  }
  // One sequence's step of one row from its raw projections (a decode step): QkvNorms of the raw q, k, v heads
  // [1, heads, D], the normed K and V rows written to the cache slot of position params.q_pos_start, then Attention
  // of the normed q over k_cache/v_cache (as Attention takes them, no blocks) into out [1, Hq, D]. q_normed
  // [1, Hq, D] is scratch the default sequence uses for the normed q (a fused implementation may ignore it).
  virtual void NormAppendAttend(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& q_weight,
                                const Tensor& k_weight, float eps, const Tensor& positions, const RopeParams& rope,
                                const Tensor& q_normed, const Tensor& k_cache, const Tensor& v_cache,
                                const AttentionParams& params, const Tensor& out) {
    const int64_t slot = params.q_pos_start % params.kv_capacity;
    QkvNorms(q, k, v, q_weight, k_weight, eps, positions, rope, q_normed, k_cache.Slice(slot, slot + 1),
             v_cache.Slice(slot, slot + 1));
    Attention(q_normed, k_cache, v_cache, nullptr, params, out);
  }

  // ---- Recorded op runs (the decode step's layers). Between BeginGraph(key) and EndGraph(), a backend may record
  // the ops instead of running them and run the record at EndGraph as one unit; the CUDA backend replays a CUDA
  // graph per key, updated in place when the key comes back with new parameters (Note [Decode graphs] in
  // engine/backend/cuda/cuda_backend.cc). The ops in between may not Upload, Download or Synchronize, nor read
  // anything on the host that changes before EndGraph. EndGraph says whether the ops ran: false means nothing ran
  // (the record failed) and the caller runs them again plainly. CancelGraph drops an unfinished record (after an
  // error between the two). The defaults run every op as it comes.
  virtual void BeginGraph(int64_t key) {}
  virtual absl::StatusOr<bool> EndGraph() { return true; }
  virtual void CancelGraph() {}

  // Writes rows src[n, ...] to ring rows dst[(first_pos + i) % dst.dim(0)] (KV-cache append).
  virtual void CopyRowsToRing(const Tensor& src, const Tensor& dst, int64_t first_pos) = 0;
  // dst[indices[i], :] = src[i, :] (converted to dst's dtype); indices [m] int32, distinct.
  // Puts image/audio soft-token embeddings at their placeholder rows.
  virtual void ScatterRows(const Tensor& src, const Tensor& indices, const Tensor& dst) = 0;
};

// Explicit factories (no static registration). CreateBackend dispatches on the kind from api.h;
// a kind that was not compiled in is UNIMPLEMENTED.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(BackendKind kind, int num_threads);
// CPU reference backend (engine/backend/cpu/, target avserve_backend_cpu). num_threads 0 = all.
std::unique_ptr<Backend> CreateCpuBackend(int num_threads);
// CUDA backend: defined in engine/backend/cuda/ (target avserve_backend_cuda, built only with
// AVSERVE_ENABLE_CUDA); device or driver problems come back as a Status, never an abort.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend();

}  // namespace avserve::engine
