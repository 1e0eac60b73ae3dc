#include "engine/backend/cuda/ops/gemm_attention.cuh"

#include <algorithm>
#include <cfloat>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/attention_mask.cuh"
#include "engine/backend/cuda/ops/device_utils.cuh"
#include "engine/backend/cuda/ops/gemm.cuh"

namespace avserve::engine::cuda {
namespace {

constexpr int kThreads = 256;
constexpr float kLog2e = 1.4426950408889634f;

// Running (max, sum of exp) of one thread, updated with one score.
__device__ __forceinline__ void OnlineUpdate(float v, float scale_log2, float* mx, float* sum) {
  if (v > *mx) {
    *sum = *sum * exp2f((*mx - v) * scale_log2) + 1.f;
    *mx = v;
  } else {
    *sum += exp2f((v - *mx) * scale_log2);
  }
}

// Causal rows without vision blocks see a prefix of the keys: [0, visible). Vectorised (16-byte loads of S, 8-byte
// stores of P), no per-key predicate. Each thread has kInFlight loads of 16 bytes in flight before it uses any, and
// takes the scores in the same order as one load at a time would, so the bits are those of the one-load loop. S's
// second read and P's stores are streaming (.cs), so that they do not push out of L2 the lines of S that other rows'
// first reads left there for their second: the P·V product reads P back only after the whole block's rows (up to 1 GB).
// On the H200 (session 14): the full layer's GEMM path at 8K queries over 32K keys 370 → 397 TFLOP/s (one load at a
// time → eight; sixteen: 355), prefill 64K 4.280 / 4.287 s → 4.254 / 4.246, 32K 1.720 / 1.715 → 1.697 / 1.695
// (alternated in one run). Without the softmax the path would run at 668.
constexpr int kInFlight = 8;

__device__ void PrefixSoftmaxRow(const float* s, bf16* out, int visible, int keys, float scale_log2, float* scratch) {
  float mx = -FLT_MAX, sum = 0.f;
  const float4* s4 = reinterpret_cast<const float4*>(s);
  const auto take = [&](const float4 v) {
    OnlineUpdate(v.x, scale_log2, &mx, &sum);
    OnlineUpdate(v.y, scale_log2, &mx, &sum);
    OnlineUpdate(v.z, scale_log2, &mx, &sum);
    OnlineUpdate(v.w, scale_log2, &mx, &sum);
  };
  const int n4 = visible / 4;
  int i = threadIdx.x;
  for (; i + (kInFlight - 1) * kThreads < n4; i += kInFlight * kThreads) {
    float4 v[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) v[u] = s4[i + u * kThreads];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) take(v[u]);
  }
  for (; i < n4; i += kThreads) take(s4[i]);
  for (int k = n4 * 4 + threadIdx.x; k < visible; k += kThreads) OnlineUpdate(s[k], scale_log2, &mx, &sum);
  const float block_max = BlockMax(mx, scratch);
  sum = BlockSum(sum * exp2f((mx - block_max) * scale_log2), scratch);
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  // Lanes past `visible` are zeroed (the padding may hold garbage).
  const auto load = [&](int j) {
    if (4 * j >= visible) return make_float4(0.f, 0.f, 0.f, 0.f);
    return __ldcs(s4 + j);
  };
  const auto write = [&](int j, const float4& v) {
    const float e[4] = {v.x, v.y, v.z, v.w};
    float pr[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) pr[c] = 4 * j + c < visible ? exp2f((e[c] - block_max) * scale_log2) * inv : 0.f;
    __nv_bfloat162 pk[2] = {__floats2bfloat162_rn(pr[0], pr[1]), __floats2bfloat162_rn(pr[2], pr[3])};
    __stcs(reinterpret_cast<uint2*>(out + 4 * j), *reinterpret_cast<const uint2*>(pk));
  };
  const int p4 = (keys + 3) / 4;
  i = threadIdx.x;
  for (; i + (kInFlight - 1) * kThreads < p4; i += kInFlight * kThreads) {
    float4 v[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) v[u] = load(i + u * kThreads);
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) write(i + u * kThreads, v[u]);
  }
  for (; i < p4; i += kThreads) write(i, load(i));
}

// One block per score row: row r is query position q0 + r / num_heads. Keys are positions key0 + [0, keys).
// P = softmax over the visible keys (masked keys -> 0), rounded to bf16; a row that sees nothing is all 0.
__global__ void __launch_bounds__(kThreads)
    MaskedSoftmaxKernel(AttentionParams p, const float* scores, bf16* probs, int q0, int key0, int keys, int ld) {
  __shared__ float scratch[kThreads / 32];
  const int row = blockIdx.x;
  const int qpos = q0 + row / p.num_heads;
  const float* s = scores + static_cast<int64_t>(row) * ld;
  bf16* out = probs + static_cast<int64_t>(row) * ld;
  const float scale_log2 = p.scale * kLog2e;
  if (p.block_ids == nullptr && p.window <= 0 && key0 == p.kv_begin) {
    const int visible = max(0, min(min(qpos + 1, p.kv_end) - key0, keys));
    PrefixSoftmaxRow(s, out, visible, keys, scale_log2, scratch);
    return;
  }
  const int bq = BlockIdAt(p, qpos);
  // One pass for the running maximum and the rescaled sum (per thread), then block-wide merges.
  float mx = -FLT_MAX, sum = 0.f;
  for (int k = threadIdx.x; k < keys; k += kThreads) {
    if (Allowed(p, qpos, key0 + k, bq, BlockIdAt(p, key0 + k))) OnlineUpdate(s[k], scale_log2, &mx, &sum);
  }
  const float block_max = BlockMax(mx, scratch);
  sum = BlockSum(sum * exp2f((mx - block_max) * scale_log2), scratch);
  mx = block_max;
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  for (int k = threadIdx.x; k < keys; k += kThreads) {
    const bool vis = Allowed(p, qpos, key0 + k, bq, BlockIdAt(p, key0 + k));
    out[k] = __float2bfloat16(vis ? exp2f((s[k] - mx) * scale_log2) * inv : 0.f);
  }
}

// Last key position that any query in [q_first, q_last] can see (block extension included).
int LastVisibleKey(const AttentionParams& p, int q_last) {
  return p.block_ids != nullptr ? p.kv_end - 1 : std::min(p.kv_end - 1, q_last);
}

}  // namespace

bool GemmAttentionApplies(const AttentionParams& p) {
  return p.num_kv_heads == 1 && p.window <= 0 && p.kv_capacity >= p.kv_end && p.kv_begin >= 0 &&
         p.q_head_stride == p.head_dim && p.q_token_stride == int64_t{p.num_heads} * p.head_dim &&
         p.o_head_stride == p.head_dim && p.o_token_stride == int64_t{p.num_heads} * p.head_dim &&
         p.k_slot_stride == p.head_dim && p.v_slot_stride == p.head_dim;
}

size_t GemmAttentionBytesPerPosition(const AttentionParams& p) {
  return size_t{6} * p.num_heads * static_cast<size_t>(p.kv_end - p.kv_begin + 8);
}

absl::Status LaunchGemmAttention(const CublasHandle& cublas, const AttentionParams& p, void* workspace,
                                 size_t workspace_bytes, cudaStream_t stream) {
  AVSERVE_CHECK(GemmAttentionApplies(p), "GemmAttention: unsupported layout");
  const int kv_span = (p.kv_end - p.kv_begin + 7) / 8 * 8;  // row stride of S and P: 16-byte aligned rows
  // Per score element: fp32 S + bf16 P.
  const int64_t max_elems = static_cast<int64_t>(workspace_bytes / (sizeof(float) + sizeof(bf16)));
  int positions = static_cast<int>(std::min<int64_t>(p.q_len, max_elems / (int64_t{kv_span} * p.num_heads)));
  if (positions < 1) return absl::ResourceExhaustedError("GemmAttention: workspace too small for one query");
  float* scores = static_cast<float*>(workspace);  // [positions * heads, kv_span] fp32
  bf16* probs = reinterpret_cast<bf16*>(scores + static_cast<int64_t>(positions) * p.num_heads * kv_span);
  for (int i0 = 0; i0 < p.q_len; i0 += positions) {
    const int n = std::min(positions, p.q_len - i0);
    const int q0 = p.q_pos0 + i0;
    const int keys = LastVisibleKey(p, q0 + n - 1) - p.kv_begin + 1;
    if (keys <= 0) continue;
    const int64_t rows = int64_t{n} * p.num_heads;
    GemmParams qk;  // S[rows, keys] = Q[rows, d] · K[keys, d]ᵀ
    qk.a = p.q + i0 * p.q_token_stride;
    qk.b = p.k + int64_t{p.kv_begin} * p.k_slot_stride;
    qk.c = scores;
    qk.c_fp32 = true;
    qk.m = rows, qk.n = keys, qk.k = p.head_dim, qk.ldc = kv_span;
    if (absl::Status st = LaunchGemm(cublas, qk, stream); !st.ok()) return st;
    MaskedSoftmaxKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(p, scores, probs, q0, p.kv_begin, keys,
                                                                              kv_span);
    AVSERVE_CUDA_CHECK_LAUNCH();
    GemmParams pv;  // O[rows, d] = P[rows, keys] · V[keys, d]
    pv.a = probs;
    pv.lda = kv_span;
    pv.b = p.v + int64_t{p.kv_begin} * p.v_slot_stride;
    pv.b_kn = true;
    pv.c = p.o + i0 * p.o_token_stride;
    pv.m = rows, pv.n = p.head_dim, pv.k = keys;
    if (absl::Status st = LaunchGemm(cublas, pv, stream); !st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace avserve::engine::cuda
