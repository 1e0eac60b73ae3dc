// Split-KV attention for a few query positions (decode), on CUDA cores.
//
// Note [Decode attention]
// The tensor-core kernel (attention.cu) tiles 64 (position, head) rows: a decode step of a sliding layer (GQA
// group 2) fills 2 of them and still pays the 64-row tile's loads and MMAs. Here a CTA owns one query position,
// one KV head and one slice of the keys, and all `group` query heads of that KV head:
//   1. scores: each warp takes four keys at a time (their K rows load together), its lanes hold 8 (or 16)
//      dims of each K row, and one warp sum per head gives the fp32 score -> shared memory;
//   2. per head: the slice's max m and l = sum of exp(s - m) (unrounded), then P = bf16(exp(s - m)) in place;
//   3. P·V: each thread owns two output dims of every head, reading V rows coalesced, P broadcast from shared.
// Slices write fp32 partials (unnormalised O, m, l) in the layout of attention.cu's split-KV path and its
// combine kernel merges them; a single slice writes bf16 O directly. Rounding: fp32 scores and statistics, P
// rounded to bf16 before P·V against its slice's max, one rounding of the output (backend.h's contract).
#include <algorithm>
#include <cfloat>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/attention_mask.cuh"
#include "engine/backend/cuda/ops/decode_attention.cuh"
#include "engine/backend/cuda/ops/device_utils.cuh"

namespace avserve::engine::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxGroup = kDecodeMaxGroup;
constexpr int kMaxKeysPerSlice = 1024;
constexpr float kLog2e = 1.4426950408889634f;

// Visible key range of query position qpos without blocks: causal and window bounds.
__device__ void KeyRange(const AttentionParams& p, int qpos, int* lo, int* hi) {
  if (p.block_ids != nullptr) {  // a block may reach past qpos (and, with override, before the window)
    *lo = p.kv_begin;
    *hi = p.kv_end;
    return;
  }
  *lo = p.window > 0 ? max(p.kv_begin, qpos - p.window + 1) : p.kv_begin;
  *hi = min(p.kv_end, qpos + 1);
}

template <int kD>
__global__ void __launch_bounds__(kThreads) DecodeAttentionKernel(AttentionParams p, int slice_cap) {
  extern __shared__ __align__(16) float smem[];
  const int group = p.num_heads / p.num_kv_heads;
  float* q_s = smem;                  // [group][kD]
  float* s_s = smem + group * kD;     // [group][slice_cap]: scores, then P
  __shared__ float m_s[kMaxGroup], l_s[kMaxGroup];
  const int split = blockIdx.x, kv_head = blockIdx.y, qi = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int qpos = p.q_pos0 + qi;

  for (int i = threadIdx.x; i < group * kD; i += kThreads) {
    const int h = i / kD, d = i % kD;
    q_s[i] = __bfloat162float(p.q[qi * p.q_token_stride + (kv_head * group + h) * p.q_head_stride + d]);
  }
  int lo, hi;
  KeyRange(p, qpos, &lo, &hi);
  const int per = (max(hi - lo, 0) + p.num_splits - 1) / p.num_splits;
  const int k0 = lo + split * per, n = max(0, min(per, hi - k0));
  const int bq = BlockIdAt(p, qpos);
  __syncthreads();

  // 1. Scores, four keys per warp at a time (their K rows load together).
  constexpr int kU = 4;
  for (int kk0 = warp * kU; kk0 < n; kk0 += kWarps * kU) {
    float kv[kU][kD / 32];
    bool visible[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int kpos = k0 + kk0 + u;
      visible[u] = kk0 + u < n && Allowed(p, qpos, kpos, bq, BlockIdAt(p, kpos));
      const bf16* krow = p.k + static_cast<int64_t>((kk0 + u < n ? kpos : k0) % p.kv_capacity) * p.k_slot_stride +
                         kv_head * p.k_head_stride;
#pragma unroll
      for (int j = 0; j < kD / 256; ++j) LoadBf16x8(krow + j * 256 + lane * 8, kv[u] + j * 8);
    }
    for (int h = 0; h < group; ++h) {
      const float* qh = q_s + h * kD;
      float acc[kU] = {};
#pragma unroll
      for (int j = 0; j < kD / 256; ++j) {
        const float4 a = *reinterpret_cast<const float4*>(qh + j * 256 + lane * 8);
        const float4 b = *reinterpret_cast<const float4*>(qh + j * 256 + lane * 8 + 4);
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          const float* e = kv[u] + j * 8;
          acc[u] += a.x * e[0] + a.y * e[1] + a.z * e[2] + a.w * e[3] + b.x * e[4] + b.y * e[5] + b.z * e[6] +
                    b.w * e[7];
        }
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const float sum = WarpSum(acc[u]);
        if (lane == 0 && kk0 + u < n) s_s[h * slice_cap + kk0 + u] = visible[u] ? sum : -INFINITY;
      }
    }
  }
  __syncthreads();

  // 2. Per head: max, unrounded sum, P rounded to bf16 in place.
  const float scale_log2 = p.scale * kLog2e;
  for (int h = warp; h < group; h += kWarps) {
    float* s = s_s + h * slice_cap;
    float m = -INFINITY;
    for (int k = lane; k < n; k += 32) m = fmaxf(m, s[k]);
    for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float l = 0.f;
    for (int k = lane; k < n; k += 32) {
      const float e = m == -INFINITY ? 0.f : exp2f((s[k] - m) * scale_log2);
      l += e;
      s[k] = Bf16Round(e);
    }
    l = WarpSum(l);
    if (lane == 0) {
      m_s[h] = m == -INFINITY ? -FLT_MAX : m;
      l_s[h] = l;
    }
  }
  __syncthreads();

  // 3. P·V: thread t owns dims 2t, 2t+1 (kD 512) or, for kD 256, threads < 128 do.
  const int d = 2 * threadIdx.x;
  if (d >= kD) return;
  float acc[kMaxGroup][2] = {};
  const bf16* vbase = p.v + kv_head * p.v_head_stride + d;
  int k = 0;
  constexpr int kV = 8;
  for (; k + kV <= n; k += kV) {
    __nv_bfloat162 vv[kV];
#pragma unroll
    for (int u = 0; u < kV; ++u) {
      vv[u] = *reinterpret_cast<const __nv_bfloat162*>(vbase + static_cast<int64_t>((k0 + k + u) % p.kv_capacity) *
                                                                   p.v_slot_stride);
    }
#pragma unroll
    for (int u = 0; u < kV; ++u) {
      const float2 v = __bfloat1622float2(vv[u]);
#pragma unroll
      for (int h = 0; h < kMaxGroup; ++h) {
        if (h < group) {
          const float pr = s_s[h * slice_cap + k + u];
          acc[h][0] += pr * v.x;
          acc[h][1] += pr * v.y;
        }
      }
    }
  }
  for (; k < n; ++k) {
    const float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(
        vbase + static_cast<int64_t>((k0 + k) % p.kv_capacity) * p.v_slot_stride));
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h) {
      if (h < group) {
        const float pr = s_s[h * slice_cap + k];
        acc[h][0] += pr * v.x;
        acc[h][1] += pr * v.y;
      }
    }
  }
  const int64_t rows_all = static_cast<int64_t>(p.q_len) * p.num_heads;
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h) {
    if (h >= group) break;
    const int head = kv_head * group + h;
    if (p.num_splits == 1) {
      const float inv = l_s[h] > 0.f ? 1.f / l_s[h] : 0.f;
      *reinterpret_cast<__nv_bfloat162*>(p.o + qi * p.o_token_stride + head * p.o_head_stride + d) =
          __floats2bfloat162_rn(acc[h][0] * inv, acc[h][1] * inv);
    } else {
      const int64_t flat = static_cast<int64_t>(qi) * p.num_heads + head;
      float* part_o = static_cast<float*>(p.workspace) + (split * rows_all + flat) * p.head_dim + d;
      *reinterpret_cast<float2*>(part_o) = make_float2(acc[h][0], acc[h][1]);
      if (threadIdx.x == 0) {
        float* part_ml = static_cast<float*>(p.workspace) + p.num_splits * rows_all * p.head_dim;
        part_ml[2 * (split * rows_all + flat)] = m_s[h];
        part_ml[2 * (split * rows_all + flat) + 1] = l_s[h];
      }
    }
  }
}

int SliceCap(const AttentionParams& p) {
  const int keys = std::max(0, p.kv_end - p.kv_begin);
  return std::max(1, (keys + p.num_splits - 1) / p.num_splits);
}

template <int kD>
void Launch(const AttentionParams& p, cudaStream_t stream) {
  const int group = p.num_heads / p.num_kv_heads;
  const int cap = SliceCap(p);
  const size_t smem = sizeof(float) * (static_cast<size_t>(group) * kD + static_cast<size_t>(group) * cap);
  static const bool attribute_set = [] {
    const int max_smem = static_cast<int>(sizeof(float) * kMaxGroup * (kD + kMaxKeysPerSlice));
    AVSERVE_CUDA_CHECK(cudaFuncSetAttribute(DecodeAttentionKernel<kD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            max_smem));
    return true;
  }();
  (void)attribute_set;
  const dim3 grid(p.num_splits, p.num_kv_heads, p.q_len);
  DecodeAttentionKernel<kD><<<grid, kThreads, smem, stream>>>(p, cap);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace

bool DecodeAttentionApplies(const AttentionParams& p) {
  const int group = p.num_kv_heads > 0 ? p.num_heads / p.num_kv_heads : 0;
  // Measured on the H200 (session 4): faster than the tensor-core kernel for the sliding layers' group of 2
  // (~30 vs ~40 us at 1024 keys), slower for the full layers' group of 16 (~170 vs ~135 us at 32K keys), where
  // the per-head warp sums of step 1 dominate. So only small groups come here.
  return (p.head_dim == 256 || p.head_dim == 512) && group >= 1 && group <= kDecodeMaxGroup &&
         p.q_len >= 1 && p.q_len <= kDecodeMaxQueries && p.q_head_stride % 8 == 0 && p.k_slot_stride % 8 == 0 &&
         p.k_head_stride % 8 == 0 && p.v_slot_stride % 2 == 0 && p.v_head_stride % 2 == 0 &&
         p.o_head_stride % 2 == 0 && p.o_token_stride % 2 == 0;
}

int ChooseDecodeSplits(const AttentionParams& p, int num_sms) {
  const int keys = std::max(1, p.kv_end - p.kv_begin);
  const int ctas = std::max(1, p.num_kv_heads * p.q_len);
  const int fill = (2 * num_sms + ctas - 1) / ctas;  // two CTAs per SM
  const int at_least = (keys + kMaxKeysPerSlice - 1) / kMaxKeysPerSlice;    // shared-memory bound
  const int at_most = std::max(1, (keys + 31) / 32);                         // >= 32 keys per slice
  return std::max(at_least, std::min(fill, at_most));
}

bool DecodeSlicesFit(const AttentionParams& p) { return p.num_splits >= 1 && SliceCap(p) <= kMaxKeysPerSlice; }

void LaunchDecodeAttention(const AttentionParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(DecodeAttentionApplies(p), "DecodeAttention: unsupported shape");
  AVSERVE_CHECK(DecodeSlicesFit(p), "DecodeAttention: too few splits for the keys");
  AVSERVE_CHECK(p.num_splits == 1 || p.workspace != nullptr, "DecodeAttention: no workspace");
  if (p.head_dim == 256) {
    Launch<256>(p, stream);
  } else {
    Launch<512>(p, stream);
  }
  if (p.num_splits > 1) LaunchCombineSplits(p, stream);
}

}  // namespace avserve::engine::cuda
