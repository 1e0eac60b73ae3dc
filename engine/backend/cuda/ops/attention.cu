#include "engine/backend/cuda/ops/attention.cuh"

#include <algorithm>
#include <cfloat>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/attention_mask.cuh"
#include "engine/backend/cuda/ops/attention_wgmma.cuh"
#include "engine/backend/cuda/ops/decode_attention.cuh"
#include "engine/backend/cuda/ops/decode_mma.cuh"
#include "engine/backend/cuda/ops/device_utils.cuh"
#include "engine/backend/cuda/ops/host_utils.cuh"
#include "engine/backend/cuda/ops/mma.cuh"
#include "engine/backend/cuda/ops/online_softmax.cuh"
#include "engine/backend/cuda/ops/pdl.cuh"
#include "engine/backend/cuda/ops/torch_exp.cuh"

namespace avserve::engine::cuda {
namespace {

// Note [Attention tiling]
// A CTA of 8 warps (head_dim 256) or 4 (512) owns 16 "rows" per warp = (query position, query head) pairs of one
// KV head: row r is position
// r / group, head kv_head * group + r % group, so the group's heads share each K/V tile (GQA 16 loads K/V once
// for 16 heads). K/V tiles of 64 keys stream through shared memory (cp.async, K and V
// in separate buffers so the next K loads during P·V). The output dimension is cut into chunks of kDv = 256
// (head_dim 512 runs two CTAs per tile, each recomputing Q·Kᵀ), which keeps the fp32 accumulator at 128
// registers per thread.
template <int kHeadDim_, int kDv_, int kWarps_, int kStages_>
struct AttentionTraits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kDv = kDv_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kStages = kStages_;  // K/V buffers: 1, or 2 (a ring: the tile after next loads during this one)
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kBlockM = 16 * kWarps;  // 16 rows per warp
  static constexpr int kBlockN = 64;
  static constexpr int kQkStride = kHeadDim + 8;  // +16 B per row: ldmatrix rows hit distinct banks
  static constexpr int kVStride = kDv + 8;
  static constexpr size_t kSmemBytes =
      sizeof(bf16) * (size_t{kBlockM} * kQkStride +
                      kStages * (size_t{kBlockN} * kQkStride + size_t{kBlockN} * kVStride));
};

constexpr float kLog2e = 1.4426950408889634f;

// Copies `rows` rows of `cols` bf16 from global to shared (16 B per cp.async); rows flagged invalid are zeroed.
template <int kCols, int kThreads, typename RowPtr>
__device__ __forceinline__ void LoadTile(bf16* smem, int smem_stride, int rows, RowPtr row_ptr) {
  constexpr int kChunks = kCols / 8;
  for (int c = threadIdx.x; c < rows * kChunks; c += kThreads) {
    const int r = c / kChunks;
    const int col = (c % kChunks) * 8;
    bf16* dst = smem + r * smem_stride + col;
    const bf16* src = row_ptr(r);
    if (src != nullptr) {
      CpAsync16(dst, src + col);
    } else {
      *reinterpret_cast<int4*>(dst) = make_int4(0, 0, 0, 0);
    }
  }
}

template <typename Tr>
__global__ void __launch_bounds__(Tr::kThreads) AttentionKernel(AttentionParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* q_s = reinterpret_cast<bf16*>(smem_raw);                   // [kBlockM][kQkStride]
  bf16* k_ring = q_s + Tr::kBlockM * Tr::kQkStride;                // [kStages][kBlockN][kQkStride]
  bf16* v_ring = k_ring + Tr::kStages * Tr::kBlockN * Tr::kQkStride;  // [kStages][kBlockN][kVStride]
  __shared__ int key_block[Tr::kBlockN];

  const int group = p.num_heads / p.num_kv_heads;
  const int total_rows = p.q_len * group;
  const int row0 = blockIdx.x * Tr::kBlockM;
  const int kv_head = blockIdx.y;
  const int num_dchunks = p.head_dim / Tr::kDv;
  const int dchunk = blockIdx.z % num_dchunks;
  const int split = blockIdx.z / num_dchunks;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;

  // Query rows -> Q tile (rows past the end are zero).
  LoadTile<Tr::kHeadDim, Tr::kThreads>(q_s, Tr::kQkStride, Tr::kBlockM,
                                       [&](int r) { return QueryRow(p, row0 + r, group, kv_head, total_rows); });
  CpAsyncCommit();

  const CtaKeyTiles kt = KeyTilesOf(p, row0, Tr::kBlockM, Tr::kBlockN, group, total_rows);
  const int qp_min = kt.qp_min, qp_max = kt.qp_max, tile0 = kt.tile0, num_tiles = kt.num_tiles;
  const int per_split = (num_tiles + p.num_splits - 1) / p.num_splits;
  const int tile_begin = split * per_split;
  const int tile_end = min(num_tiles, tile_begin + per_split);

  const int kv_begin = p.kv_begin, kv_end = p.kv_end, kv_capacity = p.kv_capacity;
  auto key_ptr = [=](const bf16* base, int64_t slot_stride, int64_t head_stride, int64_t col_offset, int key0) {
    return [=](int r) -> const bf16* {
      const int pos = key0 + r;
      if (pos < kv_begin || pos >= kv_end) return nullptr;
      return base + (pos % kv_capacity) * slot_stride + kv_head * head_stride + col_offset;
    };
  };
  auto load_k = [&](int tile, int stage) {
    const int key0 = tile0 + tile * Tr::kBlockN;
    LoadTile<Tr::kHeadDim, Tr::kThreads>(k_ring + stage * Tr::kBlockN * Tr::kQkStride, Tr::kQkStride, Tr::kBlockN,
                                         key_ptr(p.k, p.k_slot_stride, p.k_head_stride, 0, key0));
  };
  auto load_v = [&](int tile, int stage) {
    const int key0 = tile0 + tile * Tr::kBlockN;
    LoadTile<Tr::kDv, Tr::kThreads>(v_ring + stage * Tr::kBlockN * Tr::kVStride, Tr::kVStride, Tr::kBlockN,
                                    key_ptr(p.v, p.v_slot_stride, p.v_head_stride, dchunk * Tr::kDv, key0));
  };

  const ThreadRows mine = RowsOfThread(p, row0, warp, g, group);
  const bool warp_active = row0 + warp * 16 < total_rows;
  float o_acc[Tr::kDv / 8][4], row_max[2], row_sum[2];
  StartOnlineRows(o_acc, row_max, row_sum);
  const float scale_log2 = p.scale * kLog2e;

  // S = Q·Kᵀ of this warp's 16 rows and the tile's keys.
  auto scores = [&](const bf16* k_s, float (&s)[Tr::kBlockN / 8][4]) {
#pragma unroll
    for (int j = 0; j < Tr::kBlockN / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    if (!warp_active) return;
#pragma unroll 4
    for (int kk = 0; kk < Tr::kHeadDim / 16; ++kk) {
      uint32_t a[4];
      Ldmatrix4(a, q_s + (warp * 16 + lane % 16) * Tr::kQkStride + kk * 16 + (lane / 16) * 8);
#pragma unroll
      for (int np = 0; np < Tr::kBlockN / 16; ++np) {
        uint32_t b[4];
        const int mi = lane / 8;
        Ldmatrix4(b, k_s + (np * 16 + (mi / 2) * 8 + lane % 8) * Tr::kQkStride + kk * 16 + (mi % 2) * 8);
        Mma16816(s[2 * np], a, b[0], b[1]);
        Mma16816(s[2 * np + 1], a, b[2], b[3]);
      }
    }
  };
  // Mask (skipped for tiles entirely visible to every row) and online softmax: P as A fragments.
  auto softmax = [&](int key0, float (&s)[Tr::kBlockN / 8][4], uint32_t (&pfrag)[Tr::kBlockN / 16][4]) {
    const bool full_tile = key0 >= p.kv_begin && key0 + Tr::kBlockN <= p.kv_end &&
                           key0 + Tr::kBlockN - 1 <= qp_min && (p.window <= 0 || key0 > qp_max - p.window);
#pragma unroll
    for (int j = 0; j < Tr::kBlockN / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = e / 2;
        const int kcol = j * 8 + 2 * t + (e % 2);
        if (!full_tile && !Allowed(p, mine.qpos[i], key0 + kcol, mine.block[i], key_block[kcol])) s[j][e] = -INFINITY;
      }
    }
    float corr[2];
    OnlineSoftmaxTile<Tr::kBlockN / 8>(s, row_max, row_sum, scale_log2, corr, pfrag);
    RescaleRows<Tr::kDv / 8>(o_acc, corr);
  };
  // O += P·V.
  auto accumulate = [&](const bf16* v_s, const uint32_t (&pfrag)[Tr::kBlockN / 16][4]) {
    if (!warp_active) return;
#pragma unroll
    for (int kc = 0; kc < Tr::kBlockN / 16; ++kc) {
#pragma unroll
      for (int dp = 0; dp < Tr::kDv / 16; ++dp) {
        uint32_t b[4];
        const int mi = lane / 8;
        Ldmatrix4Trans(b, v_s + (kc * 16 + (mi % 2) * 8 + lane % 8) * Tr::kVStride + dp * 16 + (mi / 2) * 8);
        Mma16816(o_acc[2 * dp], pfrag[kc], b[0], b[1]);
        Mma16816(o_acc[2 * dp + 1], pfrag[kc], b[2], b[3]);
      }
    }
  };

  if constexpr (Tr::kStages == 1) {
    // One buffer each for K and V, in separate cp.async groups: the next K loads during softmax and P·V, the next
    // V during the next Q·Kᵀ.
    if (tile_begin < tile_end) {
      load_k(tile_begin, 0);
      CpAsyncCommit();
      load_v(tile_begin, 0);
      CpAsyncCommit();
    }
    for (int tile = tile_begin; tile < tile_end; ++tile) {
      const int key0 = tile0 + tile * Tr::kBlockN;
      if (threadIdx.x < Tr::kBlockN) key_block[threadIdx.x] = BlockIdAt(p, key0 + threadIdx.x);
      CpAsyncWait<1>();  // Q and K of this tile have landed (V may still be in flight)
      __syncthreads();
      float s[Tr::kBlockN / 8][4];
      scores(k_ring, s);
      __syncthreads();  // every warp is done with the K buffer
      if (tile + 1 < tile_end) {
        load_k(tile + 1, 0);
        CpAsyncCommit();
      }
      uint32_t pfrag[Tr::kBlockN / 16][4];
      softmax(key0, s, pfrag);
      if (tile + 1 < tile_end) {
        CpAsyncWait<1>();  // V of this tile (the next K may still be in flight)
      } else {
        CpAsyncWait<0>();
      }
      __syncthreads();
      accumulate(v_ring, pfrag);
      __syncthreads();  // every warp is done with the V buffer
      if (tile + 1 < tile_end) {
        load_v(tile + 1, 0);
        CpAsyncCommit();
      }
    }
  } else {
    // A ring of two K|V stages, one cp.async group per tile: tile i + 2 loads while tile i + 1 is multiplied.
    for (int i = 0; i < 2; ++i) {
      if (tile_begin + i < tile_end) {
        load_k(tile_begin + i, i);
        load_v(tile_begin + i, i);
      }
      CpAsyncCommit();
    }
    for (int tile = tile_begin; tile < tile_end; ++tile) {
      const int stage = (tile - tile_begin) & 1;
      const int key0 = tile0 + tile * Tr::kBlockN;
      if (threadIdx.x < Tr::kBlockN) key_block[threadIdx.x] = BlockIdAt(p, key0 + threadIdx.x);
      CpAsyncWait<1>();  // Q and this tile have landed (the next one may be in flight)
      __syncthreads();
      float s[Tr::kBlockN / 8][4];
      scores(k_ring + stage * Tr::kBlockN * Tr::kQkStride, s);
      uint32_t pfrag[Tr::kBlockN / 16][4];
      softmax(key0, s, pfrag);
      accumulate(v_ring + stage * Tr::kBlockN * Tr::kVStride, pfrag);
      __syncthreads();  // every warp is done with this stage (and with key_block)
      if (tile + 2 < tile_end) {
        load_k(tile + 2, stage);
        load_v(tile + 2, stage);
      }
      CpAsyncCommit();
    }
  }
  CpAsyncWait<0>();

  // Finish: quad-reduce the row sums, then write bf16 (one split) or fp32 partials (split-KV).
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 1);
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = mine.row[i];
    if (row >= total_rows) continue;
    const int qi = row / group, head = kv_head * group + row % group;
    if (p.num_splits == 1) {
      const float inv = row_sum[i] > 0.f ? 1.f / row_sum[i] : 0.f;
      bf16* out = p.o + qi * p.o_token_stride + head * p.o_head_stride + dchunk * Tr::kDv;
#pragma unroll
      for (int j = 0; j < Tr::kDv / 8; ++j) {
        *reinterpret_cast<__nv_bfloat162*>(out + j * 8 + 2 * t) =
            __floats2bfloat162_rn(o_acc[j][2 * i] * inv, o_acc[j][2 * i + 1] * inv);
      }
    } else {
      const int64_t flat = static_cast<int64_t>(qi) * p.num_heads + head;
      const int64_t rows_all = static_cast<int64_t>(p.q_len) * p.num_heads;
      float* part_o = static_cast<float*>(p.workspace) + (split * rows_all + flat) * p.head_dim + dchunk * Tr::kDv;
      float* part_ml = static_cast<float*>(p.workspace) + p.num_splits * rows_all * p.head_dim;
#pragma unroll
      for (int j = 0; j < Tr::kDv / 8; ++j) {
        *reinterpret_cast<float2*>(part_o + j * 8 + 2 * t) = make_float2(o_acc[j][2 * i], o_acc[j][2 * i + 1]);
      }
      if (dchunk == 0 && t == 0) {
        part_ml[2 * (split * rows_all + flat)] = row_max[i];
        part_ml[2 * (split * rows_all + flat) + 1] = row_sum[i];
      }
    }
  }
}

}  // namespace

// Merges split-KV partials: one block of 8 warps per (query, head) and 128 output dims. The splits' weights
// exp(m_s - max) go to shared memory once; warp w sums splits w, w + 8, ... over its lanes' 4 dims each (float4
// loads, independent across splits), and the 8 warps' sums meet in shared memory.
constexpr int kCombineWarps = 8;
__global__ void __launch_bounds__(kCombineWarps * 32) CombineSplitsKernel(AttentionParams p) {
  extern __shared__ float weight_s[];  // [num_splits]
  __shared__ float scratch[kCombineWarps];
  __shared__ float4 sums[kCombineWarps][32];
  PdlWait();
  PdlLaunchDependents();
  const int64_t flat = blockIdx.x;
  const int qi = static_cast<int>(flat / p.num_heads), head = static_cast<int>(flat % p.num_heads);
  const int64_t rows_all = static_cast<int64_t>(p.q_len) * p.num_heads;
  const float* part_o = static_cast<const float*>(p.workspace);
  const float* part_ml = part_o + p.num_splits * rows_all * p.head_dim;
  const float scale_log2 = p.scale * kLog2e;
  float local_max = -FLT_MAX;
  for (int s = threadIdx.x; s < p.num_splits; s += blockDim.x) {
    local_max = fmaxf(local_max, part_ml[2 * (s * rows_all + flat)]);
  }
  const float global_max = BlockMax(local_max, scratch);
  float local_total = 0.f;
  for (int s = threadIdx.x; s < p.num_splits; s += blockDim.x) {
    const float w = exp2f((part_ml[2 * (s * rows_all + flat)] - global_max) * scale_log2);
    weight_s[s] = w;
    local_total += part_ml[2 * (s * rows_all + flat) + 1] * w;
  }
  const float total = BlockSum(local_total, scratch);  // its barriers also publish weight_s
  const float inv = total > 0.f ? 1.f / total : 0.f;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int d = blockIdx.y * 128 + lane * 4;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  if (d < p.head_dim) {
#pragma unroll 4
    for (int s = warp; s < p.num_splits; s += kCombineWarps) {
      const float w = weight_s[s];
      const float4 o = *reinterpret_cast<const float4*>(part_o + (s * rows_all + flat) * p.head_dim + d);
      acc.x += w * o.x;
      acc.y += w * o.y;
      acc.z += w * o.z;
      acc.w += w * o.w;
    }
  }
  sums[warp][lane] = acc;
  __syncthreads();
  if (warp != 0 || d >= p.head_dim) return;
  float4 total4 = sums[0][lane];
  for (int w = 1; w < kCombineWarps; ++w) {
    total4.x += sums[w][lane].x;
    total4.y += sums[w][lane].y;
    total4.z += sums[w][lane].z;
    total4.w += sums[w][lane].w;
  }
  bf16* out = p.o + qi * p.o_token_stride + head * p.o_head_stride + d;
  out[0] = __float2bfloat16(total4.x * inv);
  out[1] = __float2bfloat16(total4.y * inv);
  out[2] = __float2bfloat16(total4.z * inv);
  out[3] = __float2bfloat16(total4.w * inv);
}

namespace {

// Warps (16 rows each) per CTA. head_dim 256: 128-row tiles, which halve the K/V traffic per row (session 4's
// attempt failed because kBlockM stayed 64 while the warps read 128 rows of the Q tile). head_dim 512: 4, as the
// 64-row tiles already need 167 KB of shared memory.
constexpr int WarpsFor(int head_dim) { return head_dim == 256 ? 8 : 4; }

template <int kHeadDim>
void LaunchFor(const AttentionParams& p, cudaStream_t stream) {
  // head_dim 256: 8 warps and a two-stage K|V ring, 203 KB of shared memory; 512: 4 warps, one stage, 167 KB.
  using Tr = AttentionTraits<kHeadDim, 256, WarpsFor(kHeadDim), kHeadDim == 256 ? 2 : 1>;
  const int group = p.num_heads / p.num_kv_heads;
  const int row_tiles = (p.q_len * group + Tr::kBlockM - 1) / Tr::kBlockM;
  // The dynamic shared-memory limit is raised once per instantiation (thread-safe static init).
  static const bool attribute_set = [] {
    AVSERVE_CUDA_CHECK(cudaFuncSetAttribute(AttentionKernel<Tr>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(Tr::kSmemBytes)));
    return true;
  }();
  (void)attribute_set;
  const dim3 grid(row_tiles, p.num_kv_heads, p.num_splits * (kHeadDim / Tr::kDv));
  AttentionKernel<Tr><<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

// Any head_dim that is a multiple of 32 up to 512 (e.g. the tiny test checkpoints): one block of 4 warps per
// (query, head); warps take every 4th key, lanes hold head_dim / 32 dims. CUDA cores only: a correctness
// fallback, not a fast path. Its rounding points are the CPU reference backend's (which reproduces the kernel
// behind transformers' sdpa on CPU, see Note [Torch CPU attention numerics] in torch_exp.cuh): keys in blocks of
// kTorchKeyBlock absolute positions, each block's max taken over the whole block before any numerator, the
// denominator summing fp32 numerators and P·V using them rounded to bf16.
template <int kPerLane>
__device__ __forceinline__ float SimpleScore(const AttentionParams& p, const float (&q)[kPerLane], const bf16* krow) {
  const int lane = threadIdx.x % 32;
  float dot = 0.f;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) dot = __fmaf_rn(q[e], __bfloat162float(krow[lane + 32 * e]), dot);
  return __fmul_rn(WarpSum(dot), p.scale);
}

template <int kPerLane>
__global__ void __launch_bounds__(128) SimpleAttentionKernel(AttentionParams p) {
  __shared__ float merge_o[4][kPerLane * 32];
  __shared__ float merge_sum[4];
  __shared__ float scratch[4];
  const int qi = blockIdx.x, head = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = p.num_heads / p.num_kv_heads, kv_head = head / group;
  const int qpos = p.q_pos0 + qi, bq = BlockIdAt(p, qpos);
  float q[kPerLane], o[kPerLane];
  const bf16* qrow = p.q + qi * p.q_token_stride + head * p.q_head_stride;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    q[e] = __bfloat162float(qrow[lane + 32 * e]);
    o[e] = 0.f;
  }
  auto k_row = [&](int kpos) { return p.k + (kpos % p.kv_capacity) * p.k_slot_stride + kv_head * p.k_head_stride; };
  auto v_row = [&](int kpos) { return p.v + (kpos % p.kv_capacity) * p.v_slot_stride + kv_head * p.v_head_stride; };
  float mx = -INFINITY, sum = 0.f;  // shared by all warps: each block's max is block-wide
  for (int b0 = p.kv_begin; b0 < p.kv_end;) {
    const int b1 = min(p.kv_end, (b0 / kTorchKeyBlock + 1) * kTorchKeyBlock);
    float bmax = mx;
    for (int kpos = b0 + warp; kpos < b1; kpos += 4) {
      if (Allowed(p, qpos, kpos, bq, BlockIdAt(p, kpos))) bmax = fmaxf(bmax, SimpleScore<kPerLane>(p, q, k_row(kpos)));
    }
    bmax = BlockMax(bmax, scratch);
    const float corr = bmax == -INFINITY ? 1.f : expf(mx - bmax);
    sum *= corr;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) o[e] *= corr;
    mx = bmax;
    for (int kpos = b0 + warp; kpos < b1; kpos += 4) {
      if (!Allowed(p, qpos, kpos, bq, BlockIdAt(p, kpos))) continue;
      const float x = SimpleScore<kPerLane>(p, q, k_row(kpos)) - bmax;
      const float w = TorchFastExpKey(kpos, p.kv_end) ? TorchFastExp(x) : expf(x);
      sum += w;
      const float pw = Bf16Round(w);
      const bf16* vrow = v_row(kpos);
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) o[e] = __fmaf_rn(pw, __bfloat162float(vrow[lane + 32 * e]), o[e]);
    }
    b0 = b1;
  }
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) merge_o[warp][lane + 32 * e] = o[e];
  if (lane == 0) merge_sum[warp] = sum;
  __syncthreads();
  if (warp != 0) return;
  const float total = merge_sum[0] + merge_sum[1] + merge_sum[2] + merge_sum[3];
  const float inv = total > 0.f ? 1.f / total : 0.f;
  bf16* orow = p.o + qi * p.o_token_stride + head * p.o_head_stride;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    const float acc = merge_o[0][lane + 32 * e] + merge_o[1][lane + 32 * e] + merge_o[2][lane + 32 * e] +
                      merge_o[3][lane + 32 * e];
    orow[lane + 32 * e] = __float2bfloat16(acc * inv);
  }
}

template <int kPerLane>
void LaunchSimple(const AttentionParams& p, cudaStream_t stream) {
  SimpleAttentionKernel<kPerLane><<<dim3(p.q_len, p.num_heads), 128, 0, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

void LaunchSimpleAttention(const AttentionParams& p, cudaStream_t stream) {
  switch (p.head_dim / 32) {
    case 1: LaunchSimple<1>(p, stream); break;
    case 2: LaunchSimple<2>(p, stream); break;
    case 4: LaunchSimple<4>(p, stream); break;
    case 8: LaunchSimple<8>(p, stream); break;
    case 16: LaunchSimple<16>(p, stream); break;
    default: AVSERVE_CHECK(false, "Attention: head_dim must be 32, 64, 128, 256 or 512");
  }
}

}  // namespace

namespace {
// One sequence's call as DecodeMma's batch of one.
DecodeSeqs OneSequence(const AttentionParams& p) {
  DecodeSeqs seqs;
  seqs.count = 1;
  seqs.q_len = p.q_len;
  seqs.seq[0] = DecodeSeq{p.k, p.v, p.q_pos0, p.kv_begin, p.kv_end, p.kv_capacity};
  return seqs;
}
}  // namespace

int ChooseAttentionSplits(const AttentionParams& p, int num_sms) {
  if (DecodeMmaApplies(p, p.q_len)) return ChooseDecodeMmaSplits(p, OneSequence(p), num_sms);
  if (DecodeAttentionApplies(p)) return ChooseDecodeSplits(p, num_sms);
  if (p.head_dim != 256 && p.head_dim != 512) return 1;  // the simple kernel does not split
  const int group = p.num_heads / p.num_kv_heads;
  const int block_m = 16 * WarpsFor(p.head_dim);
  const int row_tiles = (p.q_len * group + block_m - 1) / block_m;
  const int ctas = row_tiles * p.num_kv_heads * (p.head_dim / 256);
  const int key_tiles = (p.kv_end - p.kv_begin + 63) / 64;
  if (ctas >= num_sms) return 1;
  const int want = (2 * num_sms + ctas - 1) / ctas;
  return std::max(1, std::min({want, key_tiles / 2, 64}));
}

size_t AttentionWorkspaceBytes(const AttentionParams& p) {
  if (p.num_splits <= 1) return 0;
  const size_t rows_all = static_cast<size_t>(p.q_len) * p.num_heads;
  return sizeof(float) * p.num_splits * rows_all * (p.head_dim + 2);
}

bool AttentionOnWarpgroups(const AttentionParams& p) {
  return !DecodeMmaApplies(p, p.q_len) && !(DecodeAttentionApplies(p) && DecodeSlicesFit(p)) &&
         WgmmaAttentionApplies(p) && WgmmaAttentionOn();
}

void LaunchAttention(const AttentionParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.num_kv_heads > 0 && p.num_heads % p.num_kv_heads == 0, "Attention: bad GQA grouping");
  AVSERVE_CHECK(p.kv_capacity > 0 && p.kv_end - p.kv_begin <= p.kv_capacity, "Attention: keys exceed the cache");
  AVSERVE_CHECK(p.num_splits >= 1 && (p.num_splits == 1 || p.workspace != nullptr), "Attention: no workspace");
  if (p.q_len == 0) return;
  if (DecodeMmaApplies(p, p.q_len)) {
    LaunchDecodeMma(p, OneSequence(p), stream);
    return;
  }
  if (DecodeAttentionApplies(p) && DecodeSlicesFit(p)) {
    LaunchDecodeAttention(p, stream);
    return;
  }
  if (p.head_dim != 256 && p.head_dim != 512) {  // tensor-core kernel covers the 12B's head dims only
    LaunchSimpleAttention(p, stream);
    return;
  }
  if (WgmmaAttentionApplies(p) && WgmmaAttentionOn()) {  // the decode kernels are ruled out above
    LaunchWgmmaAttention(p, stream);
    return;
  }
  if (p.head_dim == 256) {
    LaunchFor<256>(p, stream);
  } else {
    LaunchFor<512>(p, stream);
  }
  if (p.num_splits > 1) LaunchCombineSplits(p, stream);
}

void LaunchCombineSplits(const AttentionParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.head_dim % 4 == 0 && p.num_splits <= 8192, "CombineSplits: head_dim % 4 or too many splits");
  const dim3 grid(p.q_len * p.num_heads, (p.head_dim + 127) / 128);
  LaunchPdl(CombineSplitsKernel, grid, dim3(kCombineWarps * 32), sizeof(float) * p.num_splits, stream, p);
}

}  // namespace avserve::engine::cuda
