#include "bench/engine_gpu/gemma4_shape.h"

#include <algorithm>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/attention.cuh"
#include "engine/backend/cuda/ops/elementwise.cuh"
#include "engine/backend/cuda/ops/gemm.cuh"
#include "engine/backend/cuda/ops/gemm_attention.cuh"
#include "engine/backend/cuda/ops/rms_norm.cuh"
#include "engine/backend/cuda/ops/sampling.cuh"
#include "engine/backend/cuda/ops/tensor_ops.cuh"
#include "engine/base/status_macros.h"

namespace avserve::bench {
namespace {

using namespace engine::cuda;  // NOLINT: the bench uses every op

// Uniform values in [-amp, amp) from a hash of the index (no host round trip for 24 GB).
__global__ void FillRandom(bf16* p, size_t n, float amp, uint64_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint64_t z = (i + seed) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 31)) * 0xBF58476D1CE4E5B9ull;
    z ^= z >> 29;
    p[i] = __float2bfloat16(amp * (static_cast<float>(z >> 40) * (2.f / 16777216.f) - 1.f));
  }
}

__global__ void FillConst(bf16* p, size_t n, float v) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    p[i] = __float2bfloat16(v);
  }
}

__global__ void Iota(int32_t* p, int n, int start) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) p[i] = start + i;
}

}  // namespace

void FillRandomBf16(bf16* p, size_t n, float amp, uint64_t seed) {
  FillRandom<<<4096, 256>>>(p, n, amp, seed);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

absl::StatusOr<Gemma4Shape> Gemma4Shape::Create(const ModelShape& s, int max_context, int chunk, int max_batch) {
  Gemma4Shape m;
  m.shape_ = s;
  m.chunk_ = chunk;
  m.max_context_ = max_context;
  cudaDeviceProp prop{};
  RETURN_IF_ERROR(CudaStatus(cudaGetDeviceProperties(&prop, 0), "properties"));
  m.num_sms_ = prop.multiProcessorCount;
  ASSIGN_OR_RETURN(m.cublas_, CublasHandle::Create());
  // Weights: one allocation, carved per tensor.
  size_t weights = static_cast<size_t>(s.vocab) * s.hidden + s.hidden;
  size_t caches = 0;
  const int ring = (chunk + s.window + 63) / 64 * 64;
  for (int l = 0; l < s.layers; ++l) {
    const int d = s.HeadDim(l);
    weights += static_cast<size_t>(s.QkvRows(l)) * s.hidden + static_cast<size_t>(s.hidden) * s.heads * d + 3 * static_cast<size_t>(s.intermediate) * s.hidden +
               4 * s.hidden + 2 * d + 8;
    caches += 2 * static_cast<size_t>(s.IsFull(l) ? max_context : ring) * s.KvHeads(l) * d;
  }
  ASSIGN_OR_RETURN(m.weights_, DeviceBuffer<bf16>::Create(weights));
  ASSIGN_OR_RETURN(m.caches_, DeviceBuffer<bf16>::Create(caches));
  m.weight_bytes_ = weights * sizeof(bf16);
  FillRandom<<<4096, 256>>>(m.weights_.get(), weights, 0.03f, 1);
  FillRandom<<<4096, 256>>>(m.caches_.get(), caches, 0.5f, 2);  // decode benchmarks read a "prefilled" cache
  bf16* w = m.weights_.get();
  bf16* c = m.caches_.get();
  auto take = [](bf16*& p, size_t n) { bf16* r = p; p += n; return r; };
  m.embed_ = take(w, static_cast<size_t>(s.vocab) * s.hidden);
  m.final_norm_ = take(w, s.hidden);
  FillConst<<<16, 256>>>(m.final_norm_, s.hidden, 1.f);
  for (int l = 0; l < s.layers; ++l) {
    const int d = s.HeadDim(l);
    LayerWeights lw;
    lw.qkv = take(w, static_cast<size_t>(s.QkvRows(l)) * s.hidden);
    lw.o = take(w, static_cast<size_t>(s.hidden) * s.heads * d);
    lw.gate_up = take(w, 2 * static_cast<size_t>(s.intermediate) * s.hidden);
    lw.down = take(w, static_cast<size_t>(s.intermediate) * s.hidden);
    lw.norms = take(w, 4 * s.hidden);
    lw.q_norm = take(w, d);
    lw.k_norm = take(w, d);
    lw.scalar = take(w, 8);
    FillConst<<<64, 256>>>(lw.norms, 4 * s.hidden + 2 * d + 8, 1.f);  // norms, q/k norms and the layer scalar
    lw.capacity = s.IsFull(l) ? max_context : ring;
    lw.k_cache = take(c, static_cast<size_t>(lw.capacity) * s.KvHeads(l) * d);
    lw.v_cache = take(c, static_cast<size_t>(lw.capacity) * s.KvHeads(l) * d);
    m.layers_.push_back(lw);
  }
  const size_t rows = std::max(chunk, max_batch);
  ASSIGN_OR_RETURN(m.h_, DeviceBuffer<bf16>::Create(rows * s.hidden));
  ASSIGN_OR_RETURN(m.xn_, DeviceBuffer<bf16>::Create(rows * s.hidden));
  ASSIGN_OR_RETURN(m.qkv_, DeviceBuffer<bf16>::Create(rows * (s.heads + 1) * s.full_head_dim));
  ASSIGN_OR_RETURN(m.q_, DeviceBuffer<bf16>::Create(rows * s.heads * s.full_head_dim));
  ASSIGN_OR_RETURN(m.attn_, DeviceBuffer<bf16>::Create(rows * s.heads * s.full_head_dim));
  ASSIGN_OR_RETURN(m.proj_, DeviceBuffer<bf16>::Create(rows * s.hidden));
  ASSIGN_OR_RETURN(m.gate_up_, DeviceBuffer<bf16>::Create(rows * 2 * s.intermediate));
  ASSIGN_OR_RETURN(m.act_, DeviceBuffer<bf16>::Create(rows * s.intermediate));
  ASSIGN_OR_RETURN(m.logits_bf16_, DeviceBuffer<bf16>::Create(static_cast<size_t>(s.vocab)));
  ASSIGN_OR_RETURN(m.logits_, DeviceBuffer<float>::Create(static_cast<size_t>(s.vocab)));
  ASSIGN_OR_RETURN(m.ids_, DeviceBuffer<int32_t>::Create(rows));
  ASSIGN_OR_RETURN(m.positions_, DeviceBuffer<int32_t>::Create(rows));
  ASSIGN_OR_RETURN(m.next_id_, DeviceBuffer<int32_t>::Create(1));
  ASSIGN_OR_RETURN(m.attention_ws_, DeviceBuffer<unsigned char>::Create(size_t{2} << 30));
  Iota<<<64, 256>>>(m.ids_.get(), static_cast<int>(rows), 1000);
  RETURN_IF_ERROR(CudaStatus(cudaDeviceSynchronize(), "init"));
  return m;
}

void Gemma4Shape::Gemm(const bf16* a, const bf16* w, void* c, int64_t m, int64_t n, int64_t k, cudaStream_t stream,
                       bool c_fp32) {
  GemmParams p;
  p.a = a;
  p.b = w;
  p.c = c;
  p.c_fp32 = c_fp32;
  p.m = m, p.n = n, p.k = k;
  AVSERVE_CHECK(LaunchGemm(cublas_, p, stream).ok(), "gemm");
}

// One decoder layer (spec §5.3-5.4) over n tokens at positions [pos0, pos0 + n).
void Gemma4Shape::Layer(int l, int pos0, int n, cudaStream_t stream) {
  const ModelShape& s = shape_;
  const LayerWeights& lw = layers_[l];
  const bool full = s.IsFull(l);
  const int d = s.HeadDim(l), kvh = s.KvHeads(l), qkv_rows = s.QkvRows(l), q_dim = s.heads * d;
  bf16* h = h_.get();
  bf16* xn = xn_.get();
  bf16* qkv = qkv_.get();  // [n, q | k | v]
  auto norm = [&](const bf16* x, bf16* y, const bf16* wt, int heads, int dim, int64_t x_stride, int64_t y_stride,
                  bool rope, const bf16* residual = nullptr, const bf16* scale = nullptr) {
    RmsNormParams p;
    p.x = x, p.y = y, p.weight = wt, p.residual = residual, p.out_scale = scale;
    p.tokens = n, p.heads = heads, p.dim = dim;
    p.token_stride = x_stride, p.head_stride = dim, p.y_token_stride = y_stride, p.y_head_stride = dim;
    if (rope) {
      p.positions = positions_.get();
      p.rope_theta = full ? 1e6f : 1e4f;
      p.rope_pairs = full ? d / 8 : d / 2;  // proportional: 0.25 of the dims rotate
    }
    LaunchRmsNorm(p, stream);
  };
  norm(h, xn, lw.norms, 1, s.hidden, s.hidden, s.hidden, false);
  Gemm(xn, lw.qkv, qkv, n, qkv_rows, s.hidden, stream);
  bf16* k = qkv + q_dim;
  const int64_t cache_row = int64_t{kvh} * d;
  if (full) {
    // v = v_norm(raw k) straight into the linear cache, then k = RoPE(k_norm(k)) into it.
    norm(k, lw.v_cache + int64_t{pos0} * cache_row, nullptr, kvh, d, qkv_rows, cache_row, false);
    norm(k, lw.k_cache + int64_t{pos0} * cache_row, lw.k_norm, kvh, d, qkv_rows, cache_row, true);
  } else {
    bf16* v = k + kvh * d;
    norm(v, v, nullptr, kvh, d, qkv_rows, qkv_rows, false);
    norm(k, k, lw.k_norm, kvh, d, qkv_rows, qkv_rows, true);
    for (int which = 0; which < 2; ++which) {
      CopyRowsParams cp;
      cp.src = which == 0 ? k : v;
      cp.dst = which == 0 ? lw.k_cache : lw.v_cache;
      cp.src_stride_bytes = int64_t{qkv_rows} * 2, cp.dst_stride_bytes = cache_row * 2;
      cp.rows = n, cp.row_bytes = cache_row * 2, cp.capacity = lw.capacity, cp.first_pos = pos0;
      LaunchCopyRowsToRing(cp, stream);
    }
  }
  // Full layers take q out of the fused projection into a contiguous [n, heads * d] for the GEMM path.
  bf16* q = full ? q_.get() : qkv;
  const int64_t q_stride = full ? q_dim : qkv_rows;
  norm(qkv, q, lw.q_norm, s.heads, d, qkv_rows, q_stride, true);
  AttentionParams ap;
  ap.q = q, ap.k = lw.k_cache, ap.v = lw.v_cache, ap.o = attn_.get();
  ap.q_token_stride = q_stride, ap.q_head_stride = d;
  ap.k_slot_stride = ap.v_slot_stride = cache_row, ap.k_head_stride = ap.v_head_stride = d;
  ap.o_token_stride = q_dim, ap.o_head_stride = d;
  ap.q_len = n, ap.q_pos0 = pos0, ap.kv_end = pos0 + n;
  ap.kv_begin = full ? 0 : std::max(0, pos0 + n - lw.capacity);
  ap.kv_capacity = lw.capacity;
  ap.num_heads = s.heads, ap.num_kv_heads = kvh, ap.head_dim = d;
  ap.window = full ? 0 : s.window;
  if (GemmAttentionApplies(ap) && int64_t{n} * s.heads >= 1024) {
    AVSERVE_CHECK(LaunchGemmAttention(cublas_, ap, attention_ws_.get(), attention_ws_.bytes(), stream).ok(), "attn");
  } else {
    ap.num_splits = ChooseAttentionSplits(ap, num_sms_);
    if (AttentionWorkspaceBytes(ap) > attention_ws_.bytes()) ap.num_splits = 1;
    ap.workspace = attention_ws_.get();
    LaunchAttention(ap, stream);
  }
  Gemm(attn_.get(), lw.o, proj_.get(), n, s.hidden, q_dim, stream);
  norm(proj_.get(), h, lw.norms + s.hidden, 1, s.hidden, s.hidden, s.hidden, false, h);
  norm(h, xn, lw.norms + 2 * s.hidden, 1, s.hidden, s.hidden, s.hidden, false);
  Gemm(xn, lw.gate_up, gate_up_.get(), n, 2 * s.intermediate, s.hidden, stream);
  GegluParams gp;
  gp.gate = gate_up_.get(), gp.up = gate_up_.get() + s.intermediate, gp.out = act_.get();
  gp.gate_stride = gp.up_stride = 2 * s.intermediate, gp.out_stride = s.intermediate;
  gp.rows = n, gp.cols = s.intermediate;
  LaunchGeglu(gp, stream);
  Gemm(act_.get(), lw.down, proj_.get(), n, s.hidden, s.intermediate, stream);
  norm(proj_.get(), h, lw.norms + 3 * s.hidden, 1, s.hidden, s.hidden, s.hidden, false, h, lw.scalar);
}

void Gemma4Shape::Forward(int pos0, int n, cudaStream_t stream) {
  const ModelShape& s = shape_;
  Iota<<<(n + 255) / 256, 256, 0, stream>>>(positions_.get(), n, pos0);
  EmbedParams ep;
  ep.ids = ids_.get(), ep.table = embed_, ep.out = h_.get();
  ep.rows = n, ep.dim = s.hidden, ep.vocab = s.vocab, ep.scale = 62.f;
  LaunchEmbed(ep, stream);
  for (int l = 0; l < s.layers; ++l) Layer(l, pos0, n, stream);
  RmsNormParams fp;
  fp.x = h_.get() + int64_t{n - 1} * s.hidden, fp.y = xn_.get(), fp.weight = final_norm_;
  fp.tokens = 1, fp.dim = s.hidden, fp.token_stride = s.hidden;
  LaunchRmsNorm(fp, stream);
  Gemm(xn_.get(), embed_, logits_bf16_.get(), 1, s.vocab, s.hidden, stream);
  SoftcapParams sp;
  sp.x = logits_bf16_.get(), sp.out = logits_.get(), sp.n = s.vocab, sp.cap = 30.f;
  LaunchSoftcap(sp, stream);
  SampleParams samp;
  samp.logits = logits_.get(), samp.row_stride = s.vocab, samp.rows = 1, samp.vocab = s.vocab;
  samp.out_ids = next_id_.get();
  LaunchSample(samp, stream);
}

void Gemma4Shape::Prefill(int length, cudaStream_t stream) {
  for (int pos = 0; pos < length; pos += chunk_) Forward(pos, std::min(chunk_, length - pos), stream);
}

}  // namespace avserve::bench
