#include "engine/backend/cuda/ops/gemm_attention.cuh"

#include <algorithm>
#include <cfloat>
#include <cstdlib>

#include <cooperative_groups.h>

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

// Causal rows without vision blocks see a prefix of the keys: [0, visible). Vectorised (16-byte loads of S,
// 8-byte stores of P), no per-key predicate. Reads S twice: only for rows longer than PrefixSoftmaxKernel takes.
__device__ void PrefixSoftmaxRow(const float* s, bf16* out, int visible, int keys, float scale_log2, float* scratch) {
  float mx = -FLT_MAX, sum = 0.f;
  const float4* s4 = reinterpret_cast<const float4*>(s);
  for (int i = threadIdx.x; i < visible / 4; i += kThreads) {
    const float4 v = s4[i];
    OnlineUpdate(v.x, scale_log2, &mx, &sum);
    OnlineUpdate(v.y, scale_log2, &mx, &sum);
    OnlineUpdate(v.z, scale_log2, &mx, &sum);
    OnlineUpdate(v.w, scale_log2, &mx, &sum);
  }
  for (int k = visible / 4 * 4 + threadIdx.x; k < visible; k += kThreads) OnlineUpdate(s[k], scale_log2, &mx, &sum);
  const float block_max = BlockMax(mx, scratch);
  sum = BlockSum(sum * exp2f((mx - block_max) * scale_log2), scratch);
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  for (int i = threadIdx.x; i < (keys + 3) / 4; i += kThreads) {
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (4 * i < visible) v = s4[i];  // lanes past `visible` are zeroed below (padding may hold garbage)
    const float e[4] = {v.x, v.y, v.z, v.w};
    __nv_bfloat162 pk[2];
    float pr[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) pr[j] = 4 * i + j < visible ? exp2f((e[j] - block_max) * scale_log2) * inv : 0.f;
    pk[0] = __floats2bfloat162_rn(pr[0], pr[1]);
    pk[1] = __floats2bfloat162_rn(pr[2], pr[3]);
    *reinterpret_cast<uint2*>(out + 4 * i) = *reinterpret_cast<const uint2*>(pk);
  }
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

// Note [Single-read softmax]
// S is written by the GEMM and read by the softmax; reading it twice (max and sum, then P) costs a quarter of the
// path's memory traffic. For causal rows without vision blocks, a row of up to kMaxClusterCtas * kCtaKeys keys is
// split over a cluster of `ctas` blocks, each holding its slice of the scores in registers (kCtaVecs float4 per
// thread); the blocks exchange their maxima, then their sums, through distributed shared memory, and write P from
// the registers. Same max, same exp2f((s - max) * scale·log2e), P = bf16(e / sum) with zeros past `visible`; only
// the order of the fp32 sum differs (the exponentials are summed after the maximum is known, instead of online).
constexpr int kCtaVecs = 8;                        // float4 of S per thread
constexpr int kCtaKeys = kThreads * kCtaVecs * 4;  // 8192 keys per block
constexpr int kMaxClusterCtas = 8;                 // portable cluster size: rows up to 65536 keys

// Cluster-wide reduction of one float per block, in rank order (every block gets the same bits).
template <bool kMax>
__device__ __forceinline__ float ClusterReduce(float v, float* slot, int ctas) {
  namespace cg = cooperative_groups;
  if (threadIdx.x == 0) *slot = v;
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();  // every block's slot is written
  float r = *cluster.map_shared_rank(slot, 0);
  for (int c = 1; c < ctas; ++c) {
    const float o = *cluster.map_shared_rank(slot, c);
    r = kMax ? fmaxf(r, o) : r + o;
  }
  return r;
}

// Score row r = blockIdx.x / ctas (query position q0 + r / num_heads), keys [c0, c0 + span) of it in this block
// (c0 = rank * span, span a multiple of 4 and at most kCtaKeys). Causal prefix only: keys [0, visible) are seen.
// 64 registers (4 blocks per SM): the 32 floats of scores and the rest.
__global__ void __launch_bounds__(kThreads, 4)
    PrefixSoftmaxKernel(AttentionParams p, const float* scores, bf16* probs, int q0, int keys, int ld, int ctas,
                        int span) {
  __shared__ float scratch[kThreads / 32];
  __shared__ float slots[2];  // this block's maximum and sum, read by the other blocks of the cluster
  const int64_t row = blockIdx.x / ctas;
  const int c0 = static_cast<int>(blockIdx.x % ctas) * span;
  const int qpos = q0 + static_cast<int>(row / p.num_heads);
  const int visible = max(0, min(min(qpos + 1, p.kv_end) - p.kv_begin, keys));
  const float4* s4 = reinterpret_cast<const float4*>(scores + row * ld + c0);
  const float scale_log2 = p.scale * kLog2e;
  // e[i] holds keys c0 + 4 * (threadIdx.x + i * kThreads) + [0, 4): the scores, then their exponentials.
  float e[kCtaVecs][4];
  float mx = -FLT_MAX;
#pragma unroll
  for (int i = 0; i < kCtaVecs; ++i) {
    const int k = 4 * (static_cast<int>(threadIdx.x) + i * kThreads);  // key offset in the slice
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (k < span && c0 + k < visible) v = s4[k / 4];  // lanes past `visible` are masked below
    e[i][0] = v.x, e[i][1] = v.y, e[i][2] = v.z, e[i][3] = v.w;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (k < span && c0 + k + j < visible) mx = fmaxf(mx, e[i][j]);
    }
  }
  mx = BlockMax(mx, scratch);
  if (ctas > 1) mx = ClusterReduce<true>(mx, &slots[0], ctas);
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kCtaVecs; ++i) {
    const int k = 4 * (static_cast<int>(threadIdx.x) + i * kThreads);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      e[i][j] = k < span && c0 + k + j < visible ? exp2f((e[i][j] - mx) * scale_log2) : 0.f;
      sum += e[i][j];
    }
  }
  sum = BlockSum(sum, scratch);
  if (ctas > 1) sum = ClusterReduce<false>(sum, &slots[1], ctas);
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  bf16* out = probs + row * ld + c0;
#pragma unroll
  for (int i = 0; i < kCtaVecs; ++i) {
    const int k = 4 * (static_cast<int>(threadIdx.x) + i * kThreads);
    if (k >= span || c0 + k >= keys) continue;  // P is written up to keys rounded up to 4, like PrefixSoftmaxRow
    __nv_bfloat162 pk[2];
    pk[0] = __floats2bfloat162_rn(e[i][0] * inv, e[i][1] * inv);
    pk[1] = __floats2bfloat162_rn(e[i][2] * inv, e[i][3] * inv);
    *reinterpret_cast<uint2*>(out + k) = *reinterpret_cast<const uint2*>(pk);
  }
  if (ctas > 1) cooperative_groups::this_cluster().sync();  // no block leaves while another may read its slots
}

// On unless AVSERVE_ONE_READ_SOFTMAX=0, which keeps the two-read rows (to measure one against the other).
bool OneReadSoftmaxEnabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("AVSERVE_ONE_READ_SOFTMAX");
    return v == nullptr || v[0] != '0';
  }();
  return enabled;
}

// The softmax of `rows` score rows over `keys` keys starting at p.kv_begin (Note [Single-read softmax]).
void LaunchSoftmax(const AttentionParams& p, const float* scores, bf16* probs, int q0, int keys, int ld,
                   int64_t rows, cudaStream_t stream) {
  const bool prefix = p.block_ids == nullptr && p.window <= 0;
  int ctas = 1;
  while (ctas * kCtaKeys < keys) ctas *= 2;
  if (!prefix || ctas > kMaxClusterCtas || !OneReadSoftmaxEnabled()) {
    MaskedSoftmaxKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(p, scores, probs, q0, p.kv_begin, keys,
                                                                              ld);
    AVSERVE_CUDA_CHECK_LAUNCH();
    return;
  }
  const int span = ((keys + ctas - 1) / ctas + 3) / 4 * 4;  // <= kCtaKeys: ctas * kCtaKeys >= keys
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(rows * ctas));
  config.blockDim = dim3(kThreads);
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeClusterDimension;
  attribute[0].val.clusterDim.x = static_cast<unsigned>(ctas);
  attribute[0].val.clusterDim.y = 1;
  attribute[0].val.clusterDim.z = 1;
  config.attrs = attribute;
  config.numAttrs = ctas > 1 ? 1 : 0;
  AVSERVE_CUDA_CHECK(cudaLaunchKernelEx(&config, PrefixSoftmaxKernel, p, scores, probs, q0, keys, ld, ctas, span));
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
    LaunchSoftmax(p, scores, probs, q0, keys, kv_span, rows, stream);
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
