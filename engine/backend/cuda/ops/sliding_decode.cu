// Note [Sliding decode in one launch]
// A sliding layer's decode step used to be three launches of a few microseconds each: the q/k/v head norms, the
// split-KV attention over the 1,024-key window, and the merge of its key slices. Each is short, and between them
// the GPU mostly waits. Here one launch does all three:
//   * grid (kSplits, kv_heads), one cluster of kSplits CTAs per KV head; CTA s owns key slice s of the window.
//   * Each CTA first starts copying its slice's K and V rows into shared memory (cp.async), then norms its KV
//     head's group of query heads (the warp-per-head code of the norm kernels, head_norm.cuh) while the copies
//     fly. The CTA whose slice holds the new position norms the step's raw K and V heads too, writes them to the
//     ring and into its shared slice.
//   * Scores, slice max, P = bf16(exp(s - m)) and unrounded sum l, and P·V as decode_attention.cu does them.
//   * The slices' (m, l, O) stay in shared memory; after a cluster barrier CTA s merges dims
//     [s·D/kSplits, (s+1)·D/kSplits) of every head from all slices' shared memory (distributed shared memory),
//     with the combine kernel's formula: weights exp(m_s - max), O = Σ w_s O_s / Σ w_s l_s, one bf16 rounding.
// Rounding points are those of the three launches it replaces, so only fp32 summation orders differ.
// On the H200 (session 11): ncu 17.6 us for the three launches (7.1 attention + 5.8 merge + 4.7 norms) against
// about 11 us for this one; decode at 32K 7.590 / 7.579 ms against 7.739 / 7.715 (AVSERVE_FUSED_SLIDING=0),
// alternated in one run.
#include "engine/backend/cuda/ops/sliding_decode.cuh"

#include <cooperative_groups.h>

#include <cfloat>
#include <cstdint>
#include <cstdlib>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/device_utils.cuh"
#include "engine/backend/cuda/ops/head_norm.cuh"
#include "engine/backend/cuda/ops/host_utils.cuh"
#include "engine/backend/cuda/ops/mma.cuh"
#include "engine/backend/cuda/ops/pdl.cuh"

namespace avserve::engine::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kD = 256;
constexpr int kMaxKeys = 1024;
// 16 warps: the launch is bound by its chain of dependent steps more than by issue, but twice session 11's 8 warps
// still took it from 11.4 to 11.2 us (ncu) and decode at 32K from 7.419 / 7.434 to 7.381 / 7.421 ms (session 13).
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kParts = kThreads / (kD / 2);  // thread groups that split P·V's keys
constexpr float kLog2e = 1.4426950408889634f;

template <int kSplits, int kGroup>
struct SlidingSmem {
  static constexpr int kSlice = kMaxKeys / kSplits;
  bf16 k[kSlice][kD];  // the slice's K rows
  bf16 v[kSlice][kD];  // and V rows
  bf16 q_normed[kGroup][kD];
  float s[kGroup][kSlice];  // scores, then P
  float o[kGroup][kD];      // this slice's unnormalised O (read by the whole cluster)
  float o_part[kParts - 1][kGroup][kD];  // P·V of key groups 1.. before they are added to group 0's
  float m[kGroup], l[kGroup];
  RopeTable<kD> rope;
};

// kEarly: launched early (dependent launch), the slice's ring rows start on their way and the RoPE table is filled
// before the wait (Note [Early ring copies]).
template <int kSplits, int kGroup, bool kEarly>
__global__ void __launch_bounds__(kThreads) SlidingDecodeKernel(SlidingDecodeParams sp) {
  using Smem = SlidingSmem<kSplits, kGroup>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Smem& sm = *reinterpret_cast<Smem*>(smem_raw);
  const AttentionParams& p = sp.a;
  cg::cluster_group cluster = cg::this_cluster();
  const int split = static_cast<int>(cluster.block_rank()), kv_head = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int qpos = p.q_pos0;
  const int lo = max(p.kv_begin, qpos - p.window + 1), hi = min(p.kv_end, qpos + 1);
  const int per = (max(hi - lo, 0) + kSplits - 1) / kSplits;
  const int k0 = lo + split * per, n = max(0, min(per, hi - k0));
  const bool owns_new = qpos >= k0 && qpos < k0 + n;

  // The slice's K/V rows (but the new one, which is written below) start on their way to shared memory, and the
  // RoPE table of the step's position is filled: before the wait when launched early (kEarly), else after it.
  const auto start_slice = [&] {
    constexpr int kPieces = kD / 8;  // 16-byte pieces per row
    const int slot0 = k0 % p.kv_capacity;
    for (int i = threadIdx.x; i < n * kPieces; i += kThreads) {
      const int kk = i / kPieces, c = (i % kPieces) * 8;
      if (k0 + kk == qpos) continue;
      const int64_t slot = slot0 + kk < p.kv_capacity ? slot0 + kk : slot0 + kk - p.kv_capacity;
      CpAsync16(&sm.k[kk][c], p.k + slot * p.k_slot_stride + kv_head * p.k_head_stride + c);
      CpAsync16(&sm.v[kk][c], p.v + slot * p.v_slot_stride + kv_head * p.v_head_stride + c);
    }
    FillRopeTables<kD>(sp.positions, 1, sp.rope_theta, sp.rope_pairs, &sm.rope);
  };
  if constexpr (kEarly) start_slice();
  PdlWait();
  PdlLaunchDependents();
  if constexpr (!kEarly) start_slice();
  __syncthreads();

  // Warps [0, kGroup): the query heads; the new row's owner: warp kGroup its K head, warp kGroup + 1 its V head.
  if (warp < kGroup || (owns_new && warp < kGroup + 2)) {
    HeadRow h;
    h.eps = sp.eps;
    if (warp < kGroup) {
      h.x = p.q + static_cast<int64_t>(kv_head * kGroup + warp) * p.q_head_stride;
      h.y = sm.q_normed[warp];
      h.weight = sp.q_weight;
      h.rope = true;
    } else {
      const bool is_k = warp == kGroup;
      h.x = is_k ? sp.k_raw + kv_head * sp.k_raw_head_stride : sp.v_raw + kv_head * sp.v_raw_head_stride;
      h.y = is_k ? sm.k[qpos - k0] : sm.v[qpos - k0];
      h.weight = is_k ? sp.k_weight : nullptr;
      h.rope = is_k;
    }
    Bf16x8 x[kD / 256];
    LoadHeadRow<kD>(h, x);
    NormHeadRow<kD>(h, x, sp.rope_pairs, sm.rope);
    if (warp >= kGroup) {  // and into the ring
      __syncwarp();
      const bool is_k = warp == kGroup;
      const int64_t slot = qpos % p.kv_capacity;
      bf16* dst = const_cast<bf16*>(is_k ? p.k + slot * p.k_slot_stride + kv_head * p.k_head_stride
                                         : p.v + slot * p.v_slot_stride + kv_head * p.v_head_stride);
      *reinterpret_cast<Bf16x8*>(dst + lane * 8) = *reinterpret_cast<const Bf16x8*>(&h.y[lane * 8]);
    }
  }
  CpAsyncCommit();
  CpAsyncWait<0>();
  __syncthreads();

  // 1. Scores: warp w takes keys w, w + 8, ... (kKeys at most), lane l dims [8l, 8l + 8) of each; every (key,
  // head) dot product is summed over its lanes at once, so the shuffles of all of them overlap.
  {
    constexpr int kKeys = Smem::kSlice / kWarps;
    float q[kGroup][8];
#pragma unroll
    for (int h = 0; h < kGroup; ++h) {
      LoadBf16x8(&sm.q_normed[h][lane * 8], q[h]);
    }
    float dot[kKeys][kGroup] = {};
#pragma unroll
    for (int i = 0; i < kKeys; ++i) {
      const int kk = warp + i * kWarps;
      if (kk < n) {
        float kv[8];
        LoadBf16x8(&sm.k[kk][lane * 8], kv);
#pragma unroll
        for (int h = 0; h < kGroup; ++h) {
          dot[i][h] = q[h][0] * kv[0] + q[h][1] * kv[1] + q[h][2] * kv[2] + q[h][3] * kv[3] + q[h][4] * kv[4] +
                      q[h][5] * kv[5] + q[h][6] * kv[6] + q[h][7] * kv[7];
        }
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
#pragma unroll
      for (int i = 0; i < kKeys; ++i) {
#pragma unroll
        for (int h = 0; h < kGroup; ++h) dot[i][h] += __shfl_xor_sync(0xffffffffu, dot[i][h], o);
      }
    }
    if (lane == 0) {
#pragma unroll
      for (int i = 0; i < kKeys; ++i) {
        const int kk = warp + i * kWarps;
#pragma unroll
        for (int h = 0; h < kGroup; ++h) {
          if (kk < n) sm.s[h][kk] = dot[i][h];
        }
      }
    }
  }
  __syncthreads();

  // 2. Per head: max, unrounded sum, P rounded to bf16 in place.
  const float scale_log2 = p.scale * kLog2e;
  for (int h = warp; h < kGroup; h += kWarps) {
    float m = -INFINITY;
    for (int k = lane; k < n; k += 32) m = fmaxf(m, sm.s[h][k]);
    for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float l = 0.f;
    for (int k = lane; k < n; k += 32) {
      const float e = m == -INFINITY ? 0.f : exp2f((sm.s[h][k] - m) * scale_log2);
      l += e;
      sm.s[h][k] = Bf16Round(e);
    }
    l = WarpSum(l);
    if (lane == 0) {
      sm.m[h] = m == -INFINITY ? -FLT_MAX : m;
      sm.l[h] = l;
    }
  }
  __syncthreads();

  // 3. P·V: thread t owns dims 2(t % 128), +1 over keys kk ≡ t / 128 (mod kParts); the parts are added in order.
  {
    const int d = 2 * (threadIdx.x % (kD / 2)), part = threadIdx.x / (kD / 2);
    float acc[kGroup][2] = {};
#pragma unroll 8
    for (int kk = part; kk < n; kk += kParts) {
      const float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&sm.v[kk][d]));
#pragma unroll
      for (int h = 0; h < kGroup; ++h) {
        acc[h][0] += sm.s[h][kk] * v.x;
        acc[h][1] += sm.s[h][kk] * v.y;
      }
    }
    if (part > 0) {
      for (int h = 0; h < kGroup; ++h) {
        *reinterpret_cast<float2*>(&sm.o_part[part - 1][h][d]) = make_float2(acc[h][0], acc[h][1]);
      }
    }
    __syncthreads();
    if (part == 0) {
      for (int h = 0; h < kGroup; ++h) {
        float2 o = make_float2(acc[h][0], acc[h][1]);
        for (int q = 0; q < kParts - 1; ++q) {
          const float2 other = *reinterpret_cast<const float2*>(&sm.o_part[q][h][d]);
          o = make_float2(o.x + other.x, o.y + other.y);
        }
        *reinterpret_cast<float2*>(&sm.o[h][d]) = o;
      }
    }
  }
  cluster.sync();  // every slice's (m, l, O) is in its CTA's shared memory

  // 4. Merge: this CTA writes dims [split * kPart, (split + 1) * kPart) of every head of the group. Every slice's
  // values are loaded before any is used (one round trip to the other CTAs' shared memory, not kSplits).
  constexpr int kPart = kD / kSplits;
  if (threadIdx.x < kGroup * kPart) {
    const int h = threadIdx.x / kPart, d = split * kPart + threadIdx.x % kPart;
    float m[kSplits], l[kSplits], o[kSplits];
#pragma unroll
    for (int s = 0; s < kSplits; ++s) {
      m[s] = *cluster.map_shared_rank(&sm.m[h], s);
      l[s] = *cluster.map_shared_rank(&sm.l[h], s);
      o[s] = *cluster.map_shared_rank(&sm.o[h][d], s);
    }
    float mx = -FLT_MAX;
#pragma unroll
    for (int s = 0; s < kSplits; ++s) mx = fmaxf(mx, m[s]);
    float total = 0.f, acc = 0.f;
#pragma unroll
    for (int s = 0; s < kSplits; ++s) {
      const float w = exp2f((m[s] - mx) * scale_log2);
      total += l[s] * w;
      acc += w * o[s];
    }
    const float inv = total > 0.f ? 1.f / total : 0.f;
    p.o[static_cast<int64_t>(kv_head * kGroup + h) * p.o_head_stride + d] = __float2bfloat16(acc * inv);
  }
  cluster.sync();  // no CTA leaves while another still reads its shared memory
}

// Key slices (CTAs per cluster): 8, or 16 with AVSERVE_SLIDING_SPLITS=16 (a non-portable cluster size, to measure).
// On the H200 (session 11, alternated in one run) 16 lost: decode at 32K 8.159 / 8.119 ms against 7.590 / 7.579
// with 8, though ncu times one launch at about 11 us either way; a 16-CTA cluster needs 16 free SMs of one GPC
// while the next product's CTAs, launched early, take their places.
int SplitsFromEnv() {
  static const int splits = [] {
    const char* v = std::getenv("AVSERVE_SLIDING_SPLITS");
    return v != nullptr && std::atoi(v) == 16 ? 16 : 8;
  }();
  return splits;
}

// Note [Early ring copies]
// The launch is a dependent one: its CTAs take SMs as the q|k|v product's CTAs leave them, start copying their ring
// rows and fill their RoPE table, and only then wait for the product. What they read before the wait, kernels before
// the product wrote: the ring rows of earlier steps and the step's positions. The product has passed its own wait
// before this launch may start, so every kernel before it has completed (Note [Dependent launch] in pdl.cuh). The
// step's new row, which the product's output gives, is skipped and written after the wait. So the ring's 8.4 MB leave
// DRAM during the product's last microseconds instead of at the same time as the o product's staged weights (Note
// [Staged second round] in gemv.cu). On the H200 (session 17, alternated in one run): decode at 32K 7.355 / 7.274 ms
// against 7.435 / 7.502 with a plain launch (the copies alone, without the table: 7.329 / 7.302 against 7.355 /
// 7.329 in another run). AVSERVE_SLIDING_EARLY=0 launches plainly (to measure).
bool EarlyFromEnv() {
  static const bool on = EnvSwitchOn("AVSERVE_SLIDING_EARLY") && NormPdlEnabled();
  return on;
}

template <int kSplits, int kGroup, bool kEarly>
void LaunchAs(const SlidingDecodeParams& p, cudaStream_t stream) {
  const auto kernel = SlidingDecodeKernel<kSplits, kGroup, kEarly>;
  const size_t smem = sizeof(SlidingSmem<kSplits, kGroup>);
  static const bool attributes_set = [kernel, smem] {
    AVSERVE_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    if (kSplits > 8) {
      AVSERVE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    }
    return true;
  }();
  (void)attributes_set;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(kSplits, p.a.num_kv_heads);
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute[2];
  attribute[0].id = cudaLaunchAttributeClusterDimension;
  attribute[0].val.clusterDim.x = kSplits;
  attribute[0].val.clusterDim.y = 1;
  attribute[0].val.clusterDim.z = 1;
  attribute[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[1].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = kEarly ? 2 : 1;
  AVSERVE_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, p));
}

template <int kSplits, int kGroup>
void Launch(const SlidingDecodeParams& p, cudaStream_t stream) {
  EarlyFromEnv() ? LaunchAs<kSplits, kGroup, true>(p, stream) : LaunchAs<kSplits, kGroup, false>(p, stream);
}

}  // namespace

bool SlidingDecodeApplies(const SlidingDecodeParams& sp) {
  const AttentionParams& p = sp.a;
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  const int group = p.num_kv_heads > 0 ? p.num_heads / p.num_kv_heads : 0;
  return p.head_dim == kD && (group == 1 || group == 2 || group == 4) && group * p.num_kv_heads == p.num_heads &&
         p.q_len == 1 && p.window > 0 && p.window <= kMaxKeys && p.block_ids == nullptr &&
         p.kv_end == p.q_pos0 + 1 && p.kv_capacity >= p.window && sp.positions != nullptr &&
         sp.q_weight != nullptr && sp.k_weight != nullptr && sp.rope_pairs >= 0 && sp.rope_pairs <= kD / 2 &&
         aligned(p.q) && aligned(p.k) && aligned(p.v) && aligned(sp.k_raw) && aligned(sp.v_raw) &&
         aligned(sp.q_weight) && aligned(sp.k_weight) && p.q_head_stride % 8 == 0 && p.k_slot_stride % 8 == 0 &&
         p.k_head_stride % 8 == 0 && p.v_slot_stride % 8 == 0 && p.v_head_stride % 8 == 0 &&
         sp.k_raw_head_stride % 8 == 0 && sp.v_raw_head_stride % 8 == 0;
}

void LaunchSlidingDecode(const SlidingDecodeParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(SlidingDecodeApplies(p), "SlidingDecode: unsupported shape");
  const int group = p.a.num_heads / p.a.num_kv_heads;
  const bool eight = SplitsFromEnv() != 16;
  if (group == 1) {
    eight ? Launch<8, 1>(p, stream) : Launch<16, 1>(p, stream);
  } else if (group == 2) {
    eight ? Launch<8, 2>(p, stream) : Launch<16, 2>(p, stream);
  } else {
    eight ? Launch<8, 4>(p, stream) : Launch<16, 4>(p, stream);
  }
}

}  // namespace avserve::engine::cuda
