#include "engine/model/gemma4.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "engine/backend/numeric.h"
#include "engine/base/status_macros.h"

namespace avserve::engine {

// Temporaries of one forward step; freed together at its end.
class Gemma4Model::Scratch {
 public:
  explicit Scratch(Backend& backend) : backend_(backend) {}

  absl::StatusOr<Tensor> New(DType dtype, std::initializer_list<int64_t> shape) {
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    ASSIGN_OR_RETURN(std::unique_ptr<Buffer> buf, backend_.Allocate(numel * DTypeSize(dtype)));
    Tensor t = buf->View(dtype, shape);
    owned_.push_back(std::move(buf));
    return t;
  }
  // A device copy of host data.
  template <typename T>
  absl::StatusOr<Tensor> Upload(DType dtype, const T* data, std::initializer_list<int64_t> shape) {
    ASSIGN_OR_RETURN(Tensor t, New(dtype, shape));
    RETURN_IF_ERROR(backend_.Upload(data, t.bytes(), t));
    return t;
  }

 private:
  Backend& backend_;
  std::vector<std::unique_ptr<Buffer>> owned_;
};

namespace {
bool IsVision(TokenType t) { return t == TokenType::kImage || t == TokenType::kVideo; }
}  // namespace

Gemma4Model::Gemma4Model(Backend& backend, ModelConfig config, ModelWeights weights, bool vision_blocks_all_layers)
    : backend_(backend), config_(std::move(config)), weights_(std::move(weights)),
      blocks_all_layers_(vision_blocks_all_layers) {
  // Sampler ignores ids outside the vocabulary; ArgmaxRows wants them ascending and distinct.
  std::vector<int32_t> ids;
  for (int32_t id : config_.info.suppress_ids) {
    if (id >= 0 && id < config_.vocab_size) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  if (ids.empty()) return;
  absl::StatusOr<std::unique_ptr<Buffer>> buffer = backend_.Allocate(ids.size() * sizeof(int32_t));
  suppress_status_ = buffer.status();
  if (!buffer.ok()) return;
  suppress_buffer_ = *std::move(buffer);
  suppress_ = suppress_buffer_->View(DType::kI32, {static_cast<int64_t>(ids.size())});
  suppress_status_ = backend_.Upload(ids.data(), suppress_.bytes(), suppress_);
  backend_.Synchronize();  // `ids` goes away with this constructor
}

absl::Status Gemma4Model::Forward(const ForwardInput& in, KvCache& cache, std::vector<float>& logits) {
  ASSIGN_OR_RETURN(const StepLogits out, Forward(in, cache));
  return Download(out.rows, logits);
}

absl::Status Gemma4Model::DecodeBatch(const std::vector<int32_t>& ids, const std::vector<int64_t>& pos,
                                      const std::vector<KvCache*>& caches, std::vector<float>& logits) {
  ASSIGN_OR_RETURN(const StepLogits out, DecodeBatch(ids, pos, caches));
  return Download(out.rows, logits);
}

absl::Status Gemma4Model::Download(const Tensor& rows, std::vector<float>& out) {
  out.resize(static_cast<size_t>(rows.numel()));
  RETURN_IF_ERROR(backend_.Download(rows, out.data(), out.size() * sizeof(float)));
  backend_.Synchronize();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Gemma4Model::GreedyTokens(const Tensor& rows) {
  RETURN_IF_ERROR(suppress_status_);
  Scratch s(backend_);
  const int64_t n = rows.dim(0);
  ASSIGN_OR_RETURN(Tensor ids, s.New(DType::kI32, {n}));  // [n]
  backend_.ArgmaxRows(rows, suppress_, ids);
  std::vector<int32_t> out(static_cast<size_t>(n));
  RETURN_IF_ERROR(backend_.Download(ids, out.data(), out.size() * sizeof(int32_t)));
  backend_.Synchronize();
  return out;
}

absl::StatusOr<StepLogits> Gemma4Model::Forward(const ForwardInput& in, KvCache& cache) {
  Scratch s(backend_);
  const int64_t n = in.n;
  // Positions and vision block ids: each maximal run of image/video tokens is one block (§5.5).
  std::vector<int32_t> pos(n), blocks(n, -1);
  int32_t block = -1;
  for (int64_t i = 0; i < n; ++i) {
    pos[i] = static_cast<int32_t>(in.pos0 + i);
    if (!IsVision(in.types[i])) continue;
    if (i == 0 || !IsVision(in.types[i - 1])) ++block;
    blocks[i] = block;
  }
  ASSIGN_OR_RETURN(Tensor x, s.New(weights_.act_dtype, {n, config_.hidden_size}));  // [n, H]
  RETURN_IF_ERROR(EmbedInputs(in, x, s));
  ASSIGN_OR_RETURN(Tensor positions, s.Upload(DType::kI32, pos.data(), {n}));
  Tensor block_t;
  if (block >= 0) {
    ASSIGN_OR_RETURN(block_t, s.Upload(DType::kI32, blocks.data(), {n}));
  }
  const std::vector<RowSpan> spans = {{0, n, in.pos0, std::max(in.pass_end, in.pos0 + n), &cache}};
  RETURN_IF_ERROR(Layers(x, positions, block >= 0 ? &block_t : nullptr, spans, in.cancel));
  return Logits(x, in.all_logits, s);
}

// Every decoder layer over the residual stream x; `cancel` is polled between layers. Each layer ends with the next
// one's input norm (fused into its last residual add), so only the first is normed here.
absl::Status Gemma4Model::Layers(const Tensor& x, const Tensor& positions, const Tensor* blocks,
                                 const std::vector<RowSpan>& spans, const std::atomic<bool>* cancel) {
  if (config_.layers.empty()) return absl::OkStatus();
  Scratch s(backend_);
  ASSIGN_OR_RETURN(Tensor xn, s.New(weights_.act_dtype, {x.dim(0), config_.hidden_size}));  // [n, H]
  backend_.RmsNorm(x, &weights_.layers[0].input_norm, config_.rms_eps, xn);
  const int num_layers = static_cast<int>(config_.layers.size());
  const auto run = [&](int l0, int l1) -> absl::Status {
    for (int l = l0; l < l1; ++l) {
      Scratch layer_scratch(backend_);  // a layer's temporaries go back before the next layer takes its own
      RETURN_IF_ERROR(Layer(l, x, xn, positions, blocks, spans, layer_scratch));
    }
    return absl::OkStatus();
  };
  // A decode step (one row per sequence, at most kMaxGraphRows) goes to the backend as recorded runs of layers
  // that double in length after a plain layer 0: 0 | 1 | 2-3 | 4-7 | ... (Note [Decode graphs] in
  // engine/backend/cuda/cuda_backend.cc). Any other step runs layer by layer.
  const bool decode = x.dim(0) <= kMaxGraphRows && blocks == nullptr &&
                      std::all_of(spans.begin(), spans.end(), [](const RowSpan& r) { return r.n == 1; });
  for (int l0 = 0; l0 < num_layers;) {
    const int l1 = decode ? std::min(num_layers, std::max(2 * l0, l0 + 1)) : l0 + 1;
    if (cancel && cancel->load(std::memory_order_relaxed)) return absl::CancelledError("prefill cancelled");
    bool ran = false;
    if (decode && l0 > 0) {
      backend_.BeginGraph(int64_t{l0} * (kMaxGraphRows + 1) + x.dim(0));
      const absl::Status st = run(l0, l1);
      if (!st.ok()) {
        backend_.CancelGraph();
        return st;
      }
      ASSIGN_OR_RETURN(ran, backend_.EndGraph());
    }
    if (!ran) RETURN_IF_ERROR(run(l0, l1));  // not recorded, or the record failed and nothing ran
    l0 = l1;
  }
  return absl::OkStatus();
}

absl::StatusOr<StepLogits> Gemma4Model::DecodeBatch(const std::vector<int32_t>& ids, const std::vector<int64_t>& pos,
                                                    const std::vector<KvCache*>& caches) {
  const int64_t b = static_cast<int64_t>(ids.size());
  if (pos.size() != ids.size() || caches.size() != ids.size() || b == 0) {
    return absl::InvalidArgumentError("DecodeBatch: ids, positions and caches differ in count");
  }
  Scratch s(backend_);
  std::vector<TokenType> types(b, TokenType::kText);
  std::vector<int32_t> pos32(b);
  std::vector<RowSpan> spans(b);
  for (int64_t i = 0; i < b; ++i) {
    pos32[i] = static_cast<int32_t>(pos[i]);
    spans[i] = {i, 1, pos[i], pos[i] + 1, caches[i]};
  }
  ForwardInput in;
  in.ids = ids.data();
  in.types = types.data();
  in.n = b;
  ASSIGN_OR_RETURN(Tensor x, s.New(weights_.act_dtype, {b, config_.hidden_size}));  // [B, H]
  RETURN_IF_ERROR(EmbedInputs(in, x, s));
  ASSIGN_OR_RETURN(Tensor positions, s.Upload(DType::kI32, pos32.data(), {b}));
  RETURN_IF_ERROR(Layers(x, positions, nullptr, spans, nullptr));
  return Logits(x, /*all=*/true, s);
}

// Text rows: bf16(E[id] · bf16(sqrt(H))); placeholders are looked up as pad, then overwritten by
// the unscaled media embeddings (§5.1).
absl::Status Gemma4Model::EmbedInputs(const ForwardInput& in, const Tensor& x, Scratch& s) {
  const int64_t n = in.n;
  std::vector<int32_t> ids(n), vision_rows, audio_rows;
  for (int64_t i = 0; i < n; ++i) {
    ids[i] = in.ids[i];
    if (IsVision(in.types[i])) vision_rows.push_back(static_cast<int32_t>(i));
    if (in.types[i] == TokenType::kAudio) audio_rows.push_back(static_cast<int32_t>(i));
    if (in.types[i] != TokenType::kText) ids[i] = config_.info.pad_id;
  }
  ASSIGN_OR_RETURN(Tensor ids_t, s.Upload(DType::kI32, ids.data(), {n}));
  const float scale = RoundTo(weights_.embed.dtype,
                              static_cast<float>(std::sqrt(static_cast<double>(config_.hidden_size))));
  backend_.Embed(weights_.embed, ids_t, scale, x);
  if (!vision_rows.empty()) {
    const int64_t nv = static_cast<int64_t>(vision_rows.size());
    ASSIGN_OR_RETURN(Tensor rows, s.Upload(DType::kI32, vision_rows.data(), {nv}));
    RETURN_IF_ERROR(EmbedVision(in, rows, x, s));
  }
  if (!audio_rows.empty()) {
    const int64_t na = static_cast<int64_t>(audio_rows.size());
    ASSIGN_OR_RETURN(Tensor rows, s.Upload(DType::kI32, audio_rows.data(), {na}));
    RETURN_IF_ERROR(EmbedAudio(in, rows, x, s));
  }
  return absl::OkStatus();
}

// Patches -> LN1 -> dense -> LN2 -> + position rows -> LN -> RMSNorm -> projection (§2.2).
absl::Status Gemma4Model::EmbedVision(const ForwardInput& in, const Tensor& rows, const Tensor& x,
                                      Scratch& s) {
  const VisionWeights& w = weights_.vision;
  const VisionConfig& vc = config_.vision;
  const int64_t nv = in.num_vision;
  const DType act = weights_.act_dtype;
  ASSIGN_OR_RETURN(Tensor pix_f32, s.Upload(DType::kF32, in.vision, {nv, vc.patch_dim}));
  ASSIGN_OR_RETURN(Tensor pix, s.New(act, {nv, vc.patch_dim}));  // [nv, 6912], pixels rounded to act
  backend_.Convert(pix_f32, pix);
  backend_.LayerNorm(pix, w.ln1_w, w.ln1_b, vc.ln_eps, pix);
  ASSIGN_OR_RETURN(Tensor h, s.New(act, {nv, vc.embed_dim}));  // [nv, E]
  backend_.MatMul(pix, w.dense_w, &w.dense_b, h);
  backend_.LayerNorm(h, w.ln2_w, w.ln2_b, vc.ln_eps, h);
  ASSIGN_OR_RETURN(Tensor xy, s.Upload(DType::kI32, in.vision_pos, {nv, 2}));
  backend_.AddPosition2d(h, w.pos_table, xy, h);
  backend_.LayerNorm(h, w.pos_norm_w, w.pos_norm_b, vc.ln_eps, h);
  backend_.RmsNorm(h, nullptr, vc.rms_eps, h);
  ASSIGN_OR_RETURN(Tensor out, s.New(act, {nv, config_.hidden_size}));  // [nv, H]
  backend_.MatMul(h, w.proj, nullptr, out);
  backend_.ScatterRows(out, rows, x);
  return absl::OkStatus();
}

// Frames -> act dtype -> weightless RMSNorm -> projection (§3).
absl::Status Gemma4Model::EmbedAudio(const ForwardInput& in, const Tensor& rows, const Tensor& x,
                                     Scratch& s) {
  const int64_t na = in.num_audio, dim = config_.audio.frame_dim;
  ASSIGN_OR_RETURN(Tensor f32, s.Upload(DType::kF32, in.audio, {na, dim}));
  ASSIGN_OR_RETURN(Tensor frames, s.New(weights_.act_dtype, {na, dim}));  // [na, 640]
  backend_.Convert(f32, frames);
  backend_.RmsNorm(frames, nullptr, config_.audio.rms_eps, frames);
  ASSIGN_OR_RETURN(Tensor out, s.New(weights_.act_dtype, {na, config_.hidden_size}));  // [na, H]
  backend_.MatMul(frames, weights_.audio_proj, nullptr, out);
  backend_.ScatterRows(out, rows, x);
  return absl::OkStatus();
}

// One decoder layer (§5.3/§5.4): attention with q/k/v norms and RoPE, post-norms, GeGLU MLP,
// residual adds, and the per-layer scalar over the whole stream. xn [n, H] holds this layer's input norm of x
// on entry and the next layer's on return (each norm fused into the residual add before it).
absl::Status Gemma4Model::Layer(int l, const Tensor& x, const Tensor& xn, const Tensor& positions,
                                const Tensor* blocks, const std::vector<RowSpan>& spans, Scratch& s) {
  const LayerWeights& w = weights_.layers[l];
  const DType act = weights_.act_dtype;
  const int64_t n = x.dim(0), hid = config_.hidden_size, d = config_.layers[l].head_dim, hq = config_.num_heads;
  const float eps = config_.rms_eps;

  ASSIGN_OR_RETURN(Tensor att, s.New(act, {n, hq, d}));  // [n, Hq, D]
  RETURN_IF_ERROR(SelfAttention(l, xn, positions, blocks, spans, s, att));
  ASSIGN_OR_RETURN(Tensor o, s.New(act, {n, hid}));  // [n, H]
  backend_.MatMul(att.Reshape({n, hq * d}), w.o_proj, nullptr, o);
  backend_.RmsNormAddToNorm(o, w.post_attn_norm, eps, x, /*scaled=*/false, 1.0f, w.pre_ffn_norm, xn);

  RETURN_IF_ERROR(Mlp(l, xn, s, o));
  const float scale = RoundTo(act, w.layer_scalar);
  if (l + 1 < static_cast<int>(config_.layers.size())) {
    backend_.RmsNormAddToNorm(o, w.post_ffn_norm, eps, x, /*scaled=*/true, scale, weights_.layers[l + 1].input_norm,
                              xn);
  } else {
    backend_.RmsNormAddTo(o, w.post_ffn_norm, eps, x, /*scaled=*/true, scale);
  }
  return absl::OkStatus();
}

namespace {
// Heads [n, heads, d] of columns [col0, col0 + heads·d) of t [n, width] (token stride: t's row stride).
Tensor HeadsView(const Tensor& t, int64_t col0, int64_t heads, int64_t d) {
  Tensor v = t.Columns(col0, col0 + heads * d);
  v.rank = 3;
  v.shape = {t.dim(0), heads, d, 0};
  v.strides = {t.strides[0], d, 1, 0};
  return v;
}
}  // namespace

// The raw Q, K, V projections of xn [n, H]: one product over qkv_proj where the weights are stored together
// (the results are then column views of one [n, width] tensor), else one product each.
absl::StatusOr<Gemma4Model::Qkv> Gemma4Model::Project(int l, const Tensor& xn, Scratch& s) {
  const LayerConfig& lc = config_.layers[l];
  const LayerWeights& w = weights_.layers[l];
  const DType act = weights_.act_dtype;
  const int64_t n = xn.dim(0), d = lc.head_dim, hq = config_.num_heads, hkv = lc.num_kv_heads;
  Qkv r;
  if (w.qkv_proj.data != nullptr) {
    ASSIGN_OR_RETURN(Tensor qkv, s.New(act, {n, w.qkv_proj.dim(0)}));  // [n, (Hq + 2 Hkv) D], no V on k_eq_v
    backend_.MatMul(xn, w.qkv_proj, nullptr, qkv);
    r.q = HeadsView(qkv, 0, hq, d);
    r.k = HeadsView(qkv, hq * d, hkv, d);
    r.v = lc.k_eq_v ? r.k : HeadsView(qkv, (hq + hkv) * d, hkv, d);
    return r;
  }
  ASSIGN_OR_RETURN(r.q, s.New(act, {n, hq, d}));  // [n, Hq, D]
  backend_.MatMul(xn, w.q_proj, nullptr, r.q.Reshape({n, hq * d}));
  ASSIGN_OR_RETURN(r.k, s.New(act, {n, hkv, d}));  // [n, Hkv, D]
  backend_.MatMul(xn, w.k_proj, nullptr, r.k.Reshape({n, hkv * d}));
  r.v = r.k;  // k_eq_v layers: V comes from the raw K projection
  if (!lc.k_eq_v) {
    ASSIGN_OR_RETURN(r.v, s.New(act, {n, hkv, d}));  // [n, Hkv, D]
    backend_.MatMul(xn, w.v_proj, nullptr, r.v.Reshape({n, hkv * d}));
  }
  return r;
}

// Where this step's normed K/V rows go: straight into the cache rows [slot, slot + n) when one span covers the
// step and does not wrap the layer's ring, else into temporaries that are copied to each span's cache.
absl::StatusOr<Gemma4Model::KvRows> Gemma4Model::KvTargets(int l, const Qkv& raw, const std::vector<RowSpan>& spans,
                                                           Scratch& s) {
  const int64_t n = raw.k.dim(0), hkv = raw.k.dim(1), d = raw.k.dim(2);
  const KvCache& cache = *spans.front().cache;
  const int64_t slot = spans.front().pos0 % cache.capacity(l);
  KvRows r;
  if (spans.size() == 1 && slot + n <= cache.capacity(l)) {
    r.k = cache.k(l).Slice(slot, slot + n);  // [n, Hkv, D]
    r.v = cache.v(l).Slice(slot, slot + n);  // [n, Hkv, D]
    r.in_cache = true;
    return r;
  }
  const DType act = weights_.act_dtype;
  ASSIGN_OR_RETURN(r.v, s.New(act, {n, hkv, d}));  // [n, Hkv, D]
  r.k = raw.k;                                     // [n, Hkv, D], normed in place when contiguous
  if (!r.k.is_contiguous()) {
    ASSIGN_OR_RETURN(r.k, s.New(act, {n, hkv, d}));
  }
  return r;
}

// Attention of every span over its cache, after this step's normed K/V rows are written to it: att [n, Hq, D].
absl::Status Gemma4Model::SelfAttention(int l, const Tensor& xn, const Tensor& positions, const Tensor* blocks,
                                        const std::vector<RowSpan>& spans, Scratch& s, const Tensor& att) {
  const LayerConfig& lc = config_.layers[l];
  const LayerWeights& w = weights_.layers[l];
  const float eps = config_.rms_eps;
  ASSIGN_OR_RETURN(const Qkv raw, Project(l, xn, s));
  const Tensor* layer_blocks = (lc.sliding || blocks_all_layers_) ? blocks : nullptr;
  Tensor q = raw.q;  // attention reads a contiguous [n, Hq, D]
  if (!q.is_contiguous()) {
    ASSIGN_OR_RETURN(q, s.New(weights_.act_dtype, {xn.dim(0), config_.num_heads, lc.head_dim}));
  }
  if (spans.size() == 1 && spans.front().n == 1 && layer_blocks == nullptr) {  // one row: norms, append, attention
    const RowSpan& span = spans.front();
    backend_.NormAppendAttend(raw.q, raw.k, raw.v, w.q_norm, w.k_norm, eps, positions, lc.rope, q,
                              span.cache->k(l), span.cache->v(l), AttendParams(l, span), att);
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(const KvRows kv, KvTargets(l, raw, spans, s));
  // V before K: K may be normed in place over the raw projection that V comes from (k_eq_v layers).
  backend_.QkvNorms(raw.q, raw.k, raw.v, w.q_norm, w.k_norm, eps, positions, lc.rope, q, kv.k, kv.v);
  const bool one_row_each = std::all_of(spans.begin(), spans.end(), [](const RowSpan& r) { return r.n == 1; });
  if (spans.size() > 1 && !kv.in_cache && layer_blocks == nullptr && one_row_each) {
    std::vector<Backend::DecodeKv> seqs;  // a decode step of several sequences: one append and attention for all
    for (const RowSpan& span : spans) {
      seqs.push_back({span.cache->k(l), span.cache->v(l), AttendParams(l, span)});
      // Forks of one video hold the same rows for its positions (a sliding layer's ring only until it wraps: the
      // backend checks that the first sequence's ring still holds them).
      if (span.cache != spans.front().cache) {
        seqs.back().shared_prefix = span.cache->SharedWith(*spans.front().cache);
      }
    }
    backend_.AttendDecodeRows(q, kv.k, kv.v, seqs, att);
    return absl::OkStatus();
  }
  for (const RowSpan& span : spans) {
    if (!kv.in_cache) {
      backend_.CopyRowsToRing(kv.k.Slice(span.row0, span.row0 + span.n), span.cache->k(l), span.pos0);
      backend_.CopyRowsToRing(kv.v.Slice(span.row0, span.row0 + span.n), span.cache->v(l), span.pos0);
    }
    Attend(l, q, layer_blocks, span, att);
  }
  return absl::OkStatus();
}

// GeGLU MLP (§5.3): out [n, H] = down(gelu_tanh(gate(xn)) · up(xn)); gate and up in one product (which may
// write the GeGLU itself) where their weights are stored together.
absl::Status Gemma4Model::Mlp(int l, const Tensor& xn, Scratch& s, const Tensor& out) {
  const LayerWeights& w = weights_.layers[l];
  const DType act = weights_.act_dtype;
  const int64_t n = xn.dim(0), f = config_.intermediate_size;
  ASSIGN_OR_RETURN(Tensor h, s.New(act, {n, f}));
  if (w.gate_up_proj.data != nullptr) {
    ASSIGN_OR_RETURN(Tensor gate_up, s.New(act, {n, 2 * f}));  // [n, 2F]: gate | up
    backend_.MatMulGeluTanhMul(xn, w.gate_up_proj, gate_up, h);
  } else {
    ASSIGN_OR_RETURN(Tensor up, s.New(act, {n, f}));
    backend_.MatMul(xn, w.gate_proj, nullptr, h);
    backend_.MatMul(xn, w.up_proj, nullptr, up);
    backend_.GeluTanhMul(h, up, h);
  }
  backend_.MatMul(h, w.down_proj, nullptr, out);
  return absl::OkStatus();
}

// Which keys of its cache the span's query rows see.
AttentionParams Gemma4Model::AttendParams(int l, const RowSpan& span) const {
  const LayerConfig& lc = config_.layers[l];
  const KvCache& cache = *span.cache;
  AttentionParams ap;
  ap.q_pos_start = span.pos0;
  ap.kv_pos_end = span.pos0 + span.n;
  ap.pass_key_count = span.pass_end;
  ap.kv_capacity = cache.capacity(l);
  ap.sliding_window = lc.sliding ? config_.sliding_window : 0;
  ap.kv_pos_begin = lc.sliding ? std::max<int64_t>(0, span.pos0 - (config_.sliding_window - 1)) : 0;
  ap.block_or_windowed_causal = blocks_all_layers_;
  return ap;
}

// Attends the span's query rows over its cache, which holds its K/V rows (blocks: of this span).
void Gemma4Model::Attend(int l, const Tensor& q, const Tensor* blocks, const RowSpan& span, const Tensor& att) {
  const int64_t r0 = span.row0, r1 = span.row0 + span.n;
  backend_.Attention(q.Slice(r0, r1), span.cache->k(l), span.cache->v(l), blocks, AttendParams(l, span),
                     att.Slice(r0, r1));
}

// Final norm, tied head, soft-cap in the activation dtype, then fp32 (§5.6) into a buffer of its own, which
// outlives the step.
absl::StatusOr<StepLogits> Gemma4Model::Logits(const Tensor& x, bool all, Scratch& s) {
  const int64_t n = x.dim(0), rows = all ? n : 1, vocab = config_.vocab_size;
  const DType act = weights_.act_dtype;
  const Tensor last = x.Slice(n - rows, n);
  ASSIGN_OR_RETURN(Tensor h, s.New(act, {rows, config_.hidden_size}));  // [rows, H]
  backend_.RmsNorm(last, &weights_.final_norm, config_.rms_eps, h);
  ASSIGN_OR_RETURN(Tensor lg, s.New(act, {rows, vocab}));  // [rows, V]
  backend_.MatMul(h, weights_.embed, nullptr, lg);
  if (config_.final_softcap > 0.0f) backend_.Softcap(lg, config_.final_softcap, lg);
  ASSIGN_OR_RETURN(std::unique_ptr<Buffer> buffer,
                   backend_.Allocate(static_cast<size_t>(rows * vocab) * sizeof(float)));
  StepLogits out;
  out.rows = buffer->View(DType::kF32, {rows, vocab});  // [rows, V]
  out.buffer = std::move(buffer);
  backend_.Convert(lg, out.rows);
  return out;
}

}  // namespace avserve::engine
