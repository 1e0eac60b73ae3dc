#include "engine/model/weights.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/backend/numeric.h"
#include "engine/base/status_macros.h"

namespace avserve::engine {
namespace {

// Collects the expected tensors, then resolves them all at once so one report lists the problem.
class Binder {
 public:
  Binder(const Checkpoint& ckpt, const std::string& dir, Backend& backend, ModelWeights& out)
      : ckpt_(ckpt), dir_(dir), backend_(backend), out_(out) {}

  // Expects `name` (or its transformers module-name alias) with `shape`. Tensors given the same `group` (from
  // Group()) become consecutive row ranges of one tensor, in the order of these calls.
  void Expect(const std::string& name, std::vector<int64_t> shape, Tensor* dst, int group = -1) {
    wanted_.push_back({name, std::move(shape), dst, group});
  }
  // A group of [rows_i, cols] tensors stored as one [sum rows_i, cols] tensor *fused, on a backend that does not
  // share host memory and when their dtypes agree; otherwise *fused stays empty and each is made on its own.
  int Group(Tensor* fused) {
    groups_.push_back({fused});
    return static_cast<int>(groups_.size()) - 1;
  }

  // Checks every tensor first (a bad checkpoint fails before anything is copied), then makes them.
  absl::Status Bind(const LoadProgress& progress) {
    std::set<std::string> used;
    std::vector<const TensorEntry*> found;
    int64_t total = 0;
    for (const Want& w : wanted_) {
      const TensorEntry* t = ckpt_.Find(w.name);
      if (t == nullptr) t = ckpt_.Find(Alias(w.name));
      if (t == nullptr) {
        return absl::NotFoundError(absl::StrCat(dir_, ": missing tensor ", w.name));
      }
      used.insert(t->name);
      if (t->shape != w.shape) {
        return absl::InvalidArgumentError(absl::StrCat(t->file, ": tensor ", t->name, " has shape [",
                                                       absl::StrJoin(t->shape, ", "), "], expected [",
                                                       absl::StrJoin(w.shape, ", "), "]"));
      }
      found.push_back(t);
      total += static_cast<int64_t>(t->bytes);
    }
    for (const auto& [name, t] : ckpt_.tensors()) {
      if (!used.count(name) && name != "lm_head.weight") {  // a tied head copy is harmless
        return absl::InvalidArgumentError(absl::StrCat(t.file, ": unexpected tensor ", name));
      }
    }
    return MakeAll(found, total, progress);
  }

 private:
  struct Want {
    std::string name;
    std::vector<int64_t> shape;
    Tensor* dst;
    int group;
  };
  struct RowGroup {
    Tensor* fused;
    bool fused_ok = false;
    DType dtype = DType::kF32;
    int64_t rows = 0, cols = 0, next_row = 0;
  };

  // Makes every expected tensor from its validated entry (found[i] for wanted_[i]).
  absl::Status MakeAll(const std::vector<const TensorEntry*>& found, int64_t total, const LoadProgress& progress) {
    PlanGroups(found);
    int64_t done = 0;
    for (size_t i = 0; i < wanted_.size(); ++i) {
      const int g = wanted_[i].group;
      if (g >= 0 && groups_[g].fused_ok) {
        ASSIGN_OR_RETURN(*wanted_[i].dst, MakeRows(groups_[g], *found[i]));
      } else {
        ASSIGN_OR_RETURN(*wanted_[i].dst, MakeTensor(*found[i]));
      }
      done += static_cast<int64_t>(found[i]->bytes);
      if (progress) progress(done, total);
    }
    return absl::OkStatus();
  }

  // Sizes each group from its validated tensors and decides whether it can be stored as one.
  void PlanGroups(const std::vector<const TensorEntry*>& found) {
    for (RowGroup& g : groups_) g.fused_ok = !backend_.SharesHostMemory();
    std::vector<bool> seen(groups_.size(), false);
    for (size_t i = 0; i < wanted_.size(); ++i) {
      if (wanted_[i].group < 0) continue;
      RowGroup& g = groups_[wanted_[i].group];
      const TensorEntry& t = *found[i];
      if (!seen[wanted_[i].group]) {
        seen[wanted_[i].group] = true;
        g.dtype = t.dtype;
        g.cols = t.shape.size() == 2 ? t.shape[1] : 0;
      }
      g.fused_ok = g.fused_ok && t.shape.size() == 2 && t.dtype == g.dtype && t.shape[1] == g.cols;
      g.rows += t.shape.empty() ? 0 : t.shape[0];
    }
  }

  // The next row range of the group's tensor (allocated on its first member), with `t` uploaded into it.
  absl::StatusOr<Tensor> MakeRows(RowGroup& g, const TensorEntry& t) {
    if (g.fused->data == nullptr) {
      ASSIGN_OR_RETURN(std::unique_ptr<Buffer> buf,
                       backend_.Allocate(static_cast<size_t>(g.rows * g.cols) * DTypeSize(g.dtype)));
      *g.fused = buf->View(g.dtype, {g.rows, g.cols});  // [sum rows_i, cols]
      out_.device_copies.push_back(std::move(buf));
    }
    const Tensor rows = g.fused->Slice(g.next_row, g.next_row + t.shape[0]);  // [rows_i, cols]
    g.next_row += t.shape[0];
    RETURN_IF_ERROR(backend_.Upload(t.data, t.bytes, rows));
    return rows;
  }

  // transformers module names for the tensors whose on-disk names differ (spec §7.1).
  static std::string Alias(const std::string& name) {
    const std::string ve = "model.vision_embedder.", ev = "model.embed_vision.";
    if (name.rfind(ve, 0) == 0) return ev + name.substr(ve.size());
    if (name == ev + "embedding_projection.weight") return ev + "multimodal_embedder.embedding_projection.weight";
    return name;
  }

  absl::StatusOr<Tensor> MakeTensor(const TensorEntry& t) {
    Tensor view;
    view.dtype = t.dtype;
    view.device = Device::kCpu;
    view.data = const_cast<void*>(t.data);
    view.rank = static_cast<int>(t.shape.size());
    if (view.rank > Tensor::kMaxRank) return absl::InvalidArgumentError(t.name + ": rank > 4");
    int64_t stride = 1;
    for (int i = view.rank - 1; i >= 0; --i) {
      view.shape[i] = t.shape[i];
      view.strides[i] = stride;
      stride *= t.shape[i];
    }
    if (backend_.SharesHostMemory()) return view;
    ASSIGN_OR_RETURN(std::unique_ptr<Buffer> buf, backend_.Allocate(t.bytes));
    Tensor dev = view;
    dev.data = buf->data();
    dev.device = buf->device();
    RETURN_IF_ERROR(backend_.Upload(t.data, t.bytes, dev));
    out_.device_copies.push_back(std::move(buf));
    return dev;
  }

  const Checkpoint& ckpt_;
  std::string dir_;
  Backend& backend_;
  ModelWeights& out_;
  std::vector<Want> wanted_;
  std::vector<RowGroup> groups_;
};

void ExpectLayer(Binder& b, const ModelConfig& c, int i, LayerWeights& w) {
  const LayerConfig& l = c.layers[i];
  const int64_t h = c.hidden_size, f = c.intermediate_size;
  const int64_t qd = int64_t{c.num_heads} * l.head_dim, kvd = int64_t{l.num_kv_heads} * l.head_dim;
  const std::string p = absl::StrCat("model.language_model.layers.", i, ".");
  b.Expect(p + "input_layernorm.weight", {h}, &w.input_norm);
  b.Expect(p + "post_attention_layernorm.weight", {h}, &w.post_attn_norm);
  b.Expect(p + "pre_feedforward_layernorm.weight", {h}, &w.pre_ffn_norm);
  b.Expect(p + "post_feedforward_layernorm.weight", {h}, &w.post_ffn_norm);
  const int qkv = b.Group(&w.qkv_proj), gate_up = b.Group(&w.gate_up_proj);
  b.Expect(p + "self_attn.q_proj.weight", {qd, h}, &w.q_proj, qkv);
  b.Expect(p + "self_attn.k_proj.weight", {kvd, h}, &w.k_proj, qkv);
  if (!l.k_eq_v) b.Expect(p + "self_attn.v_proj.weight", {kvd, h}, &w.v_proj, qkv);
  b.Expect(p + "self_attn.o_proj.weight", {h, qd}, &w.o_proj);
  b.Expect(p + "self_attn.q_norm.weight", {l.head_dim}, &w.q_norm);
  b.Expect(p + "self_attn.k_norm.weight", {l.head_dim}, &w.k_norm);
  b.Expect(p + "mlp.gate_proj.weight", {f, h}, &w.gate_proj, gate_up);
  b.Expect(p + "mlp.up_proj.weight", {f, h}, &w.up_proj, gate_up);
  b.Expect(p + "mlp.down_proj.weight", {h, f}, &w.down_proj);
}

void ExpectVision(Binder& b, const ModelConfig& c, VisionWeights& v) {
  const int64_t p = c.vision.patch_dim, e = c.vision.embed_dim;
  const std::string n = "model.vision_embedder.";
  b.Expect(n + "patch_ln1.weight", {p}, &v.ln1_w);
  b.Expect(n + "patch_ln1.bias", {p}, &v.ln1_b);
  b.Expect(n + "patch_dense.weight", {e, p}, &v.dense_w);
  b.Expect(n + "patch_dense.bias", {e}, &v.dense_b);
  b.Expect(n + "patch_ln2.weight", {e}, &v.ln2_w);
  b.Expect(n + "patch_ln2.bias", {e}, &v.ln2_b);
  b.Expect(n + "pos_embedding", {c.vision.posemb_size, 2, e}, &v.pos_table);
  b.Expect(n + "pos_norm.weight", {e}, &v.pos_norm_w);
  b.Expect(n + "pos_norm.bias", {e}, &v.pos_norm_b);
  b.Expect("model.embed_vision.embedding_projection.weight", {c.hidden_size, e}, &v.proj);
}

// layer_scalar is read on the host (a [1] tensor of any float dtype).
absl::StatusOr<float> ReadScalar(const Checkpoint& ckpt, const std::string& dir, const std::string& name) {
  const TensorEntry* t = ckpt.Find(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat(dir, ": missing tensor ", name));
  if (t->shape != std::vector<int64_t>{1}) {
    return absl::InvalidArgumentError(absl::StrCat(t->file, ": tensor ", name, " must have shape [1]"));
  }
  const auto* h = static_cast<const uint16_t*>(t->data);
  switch (t->dtype) {
    case DType::kBF16: return Bf16ToF32(h[0]);
    case DType::kF16: return F16ToF32(h[0]);
    default: return *static_cast<const float*>(t->data);
  }
}

}  // namespace

absl::StatusOr<ModelWeights> LoadWeights(const std::string& dir, const ModelConfig& config,
                                         Backend& backend, const LoadProgress& progress) {
  ModelWeights w;
  ASSIGN_OR_RETURN(w.checkpoint, Checkpoint::Open(dir));
  const Checkpoint& ckpt = *w.checkpoint;
  Binder b(ckpt, dir, backend, w);
  b.Expect("model.language_model.embed_tokens.weight", {config.vocab_size, config.hidden_size}, &w.embed);
  b.Expect("model.language_model.norm.weight", {config.hidden_size}, &w.final_norm);
  w.layers.resize(config.layers.size());
  // Scalars are bound too (so Bind() checks them and does not call them unexpected), then read on
  // the host below.
  std::vector<Tensor> scalars(config.layers.size());
  for (size_t i = 0; i < config.layers.size(); ++i) {
    ExpectLayer(b, config, static_cast<int>(i), w.layers[i]);
    b.Expect(absl::StrCat("model.language_model.layers.", i, ".layer_scalar"), {1}, &scalars[i]);
  }
  if (config.vision.present) ExpectVision(b, config, w.vision);
  if (config.audio.present) {
    b.Expect("model.embed_audio.embedding_projection.weight", {config.hidden_size, config.audio.frame_dim},
             &w.audio_proj);
  }
  RETURN_IF_ERROR(b.Bind(progress));
  for (size_t i = 0; i < config.layers.size(); ++i) {
    ASSIGN_OR_RETURN(w.layers[i].layer_scalar,
                     ReadScalar(ckpt, dir, absl::StrCat("model.language_model.layers.", i, ".layer_scalar")));
  }
  const DType embed_dtype = ckpt.Find("model.language_model.embed_tokens.weight") != nullptr
                                ? ckpt.Find("model.language_model.embed_tokens.weight")->dtype
                                : DType::kF32;
  // f16 checkpoints compute in fp32 (transformers would compute in f16; we prefer range safety).
  w.act_dtype = embed_dtype == DType::kBF16 ? DType::kBF16 : DType::kF32;
  return w;
}

}  // namespace avserve::engine
