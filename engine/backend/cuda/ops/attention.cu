#include "engine/backend/cuda/ops/attention.cuh"

#include <algorithm>
#include <cfloat>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/attention_mask.cuh"
#include "engine/backend/cuda/ops/decode_attention.cuh"
#include "engine/backend/cuda/ops/decode_mma.cuh"
#include "engine/backend/cuda/ops/device_utils.cuh"
#include "engine/backend/cuda/ops/host_utils.cuh"
#include "engine/backend/cuda/ops/mma.cuh"
#include "engine/backend/cuda/ops/online_softmax.cuh"
#include "engine/backend/cuda/ops/pdl.cuh"
#include "engine/backend/cuda/ops/torch_exp.cuh"
#include "engine/backend/cuda/ops/wgmma.cuh"

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

// Key range [lo, hi) that any row of the tile can see.
__device__ void TileKeyRange(const AttentionParams& p, int qp_min, int qp_max, int* lo, int* hi) {
  int k_lo = p.kv_begin;
  if (p.window > 0) k_lo = max(k_lo, qp_min - p.window + 1);
  int k_hi = qp_max + 1;
  const int bid_last = BlockIdAt(p, qp_max);
  if (bid_last >= 0) {
    while (BlockIdAt(p, k_hi) == bid_last) ++k_hi;
  }
  if (p.block_overrides_window && p.window > 0) {
    const int bid_first = BlockIdAt(p, qp_min);
    if (bid_first >= 0) {
      int b = qp_min;
      while (BlockIdAt(p, b - 1) == bid_first) --b;
      k_lo = max(p.kv_begin, min(k_lo, b));
    }
  }
  *lo = k_lo;
  *hi = min(k_hi, p.kv_end);
}

// The keys that a CTA's query rows [row0, row0 + block_m) may see, in tiles of block_n keys from tile0 (rows past
// total_rows are padding), and the query positions qp_min..qp_max those rows hold.
struct CtaKeyTiles {
  int qp_min, qp_max, tile0, num_tiles;
};
__device__ __forceinline__ CtaKeyTiles KeyTilesOf(const AttentionParams& p, int row0, int block_m, int block_n,
                                                  int group, int total_rows) {
  CtaKeyTiles kt;
  const int last_row = min(row0 + block_m, total_rows) - 1;
  kt.qp_min = p.q_pos0 + row0 / group;
  kt.qp_max = p.q_pos0 + last_row / group;
  int k_lo, k_hi;
  TileKeyRange(p, kt.qp_min, kt.qp_max, &k_lo, &k_hi);
  kt.tile0 = (k_lo >= 0 ? k_lo / block_n : 0) * block_n;
  kt.num_tiles = k_hi > kt.tile0 ? (k_hi - kt.tile0 + block_n - 1) / block_n : 0;
  return kt;
}

// Query row `row` of KV head kv_head's tile: position row / group, head kv_head * group + row % group; nullptr
// past the last row.
__device__ __forceinline__ const bf16* QueryRow(const AttentionParams& p, int row, int group, int kv_head,
                                               int total_rows) {
  if (row >= total_rows) return nullptr;
  return p.q + (row / group) * p.q_token_stride + (kv_head * group + row % group) * p.q_head_stride;
}

// A thread's two rows in the m16n8 accumulator layout, g and g + 8 of its warp's 16: tile row, query position
// and vision block of each.
struct ThreadRows {
  int row[2], qpos[2], block[2];
};
__device__ __forceinline__ ThreadRows RowsOfThread(const AttentionParams& p, int row0, int warp, int g, int group) {
  ThreadRows r;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    r.row[i] = row0 + warp * 16 + g + 8 * i;
    r.qpos[i] = p.q_pos0 + r.row[i] / group;
    r.block[i] = BlockIdAt(p, r.qpos[i]);
  }
  return r;
}

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
  float o_acc[Tr::kDv / 8][4];
#pragma unroll
  for (int j = 0; j < Tr::kDv / 8; ++j) o_acc[j][0] = o_acc[j][1] = o_acc[j][2] = o_acc[j][3] = 0.f;
  float row_max[2] = {-FLT_MAX, -FLT_MAX};
  float row_sum[2] = {0.f, 0.f};
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

// Note [Prefill attention on warpgroups]
// The sliding layers' prefill (head_dim 256, one KV split) on Hopper's warpgroup instructions. The mma.sync kernel
// above reached ~127 TFLOP/s there: with 8 warps and 245 registers a thread, an SM holds two warps per scheduler,
// each warp re-reads whole K and V tiles through ldmatrix for its own 16 rows, and the ~2,100 instructions a warp
// issues per tile wait on each other (ncu, session 12). Here the same CTA (128 rows = (query position, head)
// pairs of one KV head, Note [Attention tiling]) is two warpgroups of 64 rows:
// - S = Q·Kᵀ: 16 wgmma m64n64k16 per tile, Q and K read by the tensor cores from shared memory;
// - P stays in registers: the m64n64 accumulator of a warp is the mma.m16n8k16 layout, so the online softmax,
//   masks and rounding points are those of the kernel above (OnlineSoftmaxTile), and its bf16 P fragments are
//   the A operand of O += P·V: 4 wgmma m64n256k16 per tile, V from shared memory read N-major (transposed);
// - P·V of tile j runs on the tensor cores while the warps do the softmax of tile j + 1, whose scores were issued
//   just before it (the step lambda below).
// Tiles sit in shared memory as core matrices (8 rows x 16 B stored as 128 contiguous bytes; WgmmaDesc): row r,
// 16-byte chunk c at (r / 8) * 4608 + c * 144 + (r % 8) * 16. Warp w of a load copies row w of each 8, one
// 16-byte chunk a lane, so it reads whole 128-byte lines; the 16 bytes between core matrices put a row's
// consecutive chunks in different banks. K and V tiles of 64 keys ring through two stages (cp.async).
// Measured (engine_gpu_bench --kernels_only, 8K queries, H200): 185 TFLOP/s without the overlap, 210 with it,
// 215 with the loads' ring slots found once a tile, 217 with ex2.approx (Exp2Ftz). A first layout (128-byte
// stride, thread t copying chunk t / 8 of row t % 8) ran as fast as this one. What still holds it back (ncu):
// two warps per scheduler issue one instruction every 3.6 cycles, waiting mostly on the K/V copies and on each
// other at the tile's barrier; 255 registers leave no room for a third warpgroup or a deeper ring.
struct WgmmaTraits {
  static constexpr int kHeadDim = 256;
  static constexpr int kThreads = 256;  // two warpgroups
  static constexpr int kBlockM = 128;
  static constexpr int kBlockN = 64;
  static constexpr int kChunkBytes = 144;                        // core matrix to core matrix along a row
  static constexpr int kGroupBytes = kHeadDim / 8 * kChunkBytes;  // 8 rows: one row of core matrices
  static constexpr int kTileBytes = kBlockN / 8 * kGroupBytes;
  static constexpr int kQBytes = kBlockM / 8 * kGroupBytes;
  static constexpr size_t kSmemBytes = size_t{kQBytes} + 4 * size_t{kTileBytes};  // Q, 2 stages of K and of V
};

// Copies `groups` x 8 rows of 256 bf16 into core-matrix layout (see the Note); row_ptr(r) == nullptr zeroes row r.
template <typename RowPtr>
__device__ __forceinline__ void LoadCoreTile(unsigned char* smem, int groups, RowPtr row_ptr) {
  const int chunk = threadIdx.x % 32, r8 = threadIdx.x / 32;
  for (int i = 0; i < groups; ++i) {
    unsigned char* dst = smem + i * WgmmaTraits::kGroupBytes + chunk * WgmmaTraits::kChunkBytes + r8 * 16;
    const bf16* src = row_ptr(8 * i + r8);
    if (src != nullptr) {
      CpAsync16(dst, src + chunk * 8);
    } else {
      *reinterpret_cast<int4*>(dst) = make_int4(0, 0, 0, 0);
    }
  }
}

// Copies rows key0 + [0, 64) of K or V (one KV head) into core-matrix layout: warp w copies rows w + 8 i
// (LoadCoreTile). One modulo a tile finds the first ring slot; the next ones are 8 apart and wrap at
// most once (kv_capacity >= 64, WgmmaAttentionApplies). Only the tiles at the ends of the cache test each row.
__device__ __forceinline__ void LoadKeyCoreTile(const AttentionParams& p, const bf16* head, int64_t slot_stride,
                                                int key0, unsigned char* smem) {
  const int r8 = threadIdx.x / 32;
  const int first_slot = (key0 + r8) % p.kv_capacity;  // key0 >= 0: tiles start at multiples of 64 from 0 up
  head += (threadIdx.x % 32) * 8;
  smem += (threadIdx.x % 32) * WgmmaTraits::kChunkBytes + r8 * 16;
  const bool all_in = key0 >= p.kv_begin && key0 + WgmmaTraits::kBlockN <= p.kv_end;
#pragma unroll
  for (int i = 0; i < WgmmaTraits::kBlockN / 8; ++i) {
    int slot = first_slot + 8 * i;
    if (slot >= p.kv_capacity) slot -= p.kv_capacity;
    unsigned char* dst = smem + i * WgmmaTraits::kGroupBytes;
    const int pos = key0 + r8 + 8 * i;
    if (all_in || (pos >= p.kv_begin && pos < p.kv_end)) {
      CpAsync16(dst, head + slot * slot_stride);
    } else {
      *reinterpret_cast<int4*>(dst) = make_int4(0, 0, 0, 0);
    }
  }
}

// Keeps the compiler from moving reads or writes of a register that an unfinished wgmma uses across this point.
__device__ __forceinline__ void PinRegister(float& r) { asm volatile("" : "+f"(r)::"memory"); }
__device__ __forceinline__ void PinRegister(uint32_t& r) { asm volatile("" : "+r"(r)::"memory"); }

__global__ void __launch_bounds__(WgmmaTraits::kThreads, 1)
    WgmmaAttentionKernel(AttentionParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Tr = WgmmaTraits;
  extern __shared__ __align__(128) unsigned char wgmma_smem[];
  unsigned char* q_s = wgmma_smem;
  unsigned char* k_ring = q_s + Tr::kQBytes;            // [2][kTileBytes]
  unsigned char* v_ring = k_ring + 2 * Tr::kTileBytes;  // [2][kTileBytes]
  __shared__ int key_block[2][Tr::kBlockN];             // by tile parity

  const int group = p.num_heads / p.num_kv_heads;
  const int total_rows = p.q_len * group;
  const int row0 = blockIdx.x * Tr::kBlockM;
  const int kv_head = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int wg = warp / 4;

  const CtaKeyTiles kt = KeyTilesOf(p, row0, Tr::kBlockM, Tr::kBlockN, group, total_rows);
  const int qp_min = kt.qp_min, qp_max = kt.qp_max, tile0 = kt.tile0, num_tiles = kt.num_tiles;
  const bf16* k_head = p.k + kv_head * p.k_head_stride;
  const bf16* v_head = p.v + kv_head * p.v_head_stride;
  auto k_stage = [&](int tile) { return k_ring + (tile & 1) * Tr::kTileBytes; };
  auto v_stage = [&](int tile) { return v_ring + (tile & 1) * Tr::kTileBytes; };
  auto set_key_blocks = [&](int tile) {
    if (threadIdx.x < Tr::kBlockN) {
      key_block[tile & 1][threadIdx.x] = BlockIdAt(p, tile0 + tile * Tr::kBlockN + threadIdx.x);
    }
  };

  // Loads: Q and K of tile 0, then K of tile 1 and V of tile 0; step j loads K of j + 2 and V of j + 1.
  LoadCoreTile(q_s, Tr::kBlockM / 8, [&](int r) { return QueryRow(p, row0 + r, group, kv_head, total_rows); });
  if (num_tiles > 0) LoadKeyCoreTile(p, k_head, p.k_slot_stride, tile0, k_stage(0));
  CpAsyncCommit();
  if (num_tiles > 1) LoadKeyCoreTile(p, k_head, p.k_slot_stride, tile0 + Tr::kBlockN, k_stage(1));
  if (num_tiles > 0) LoadKeyCoreTile(p, v_head, p.v_slot_stride, tile0, v_stage(0));
  CpAsyncCommit();
  set_key_blocks(0);

  const ThreadRows mine = RowsOfThread(p, row0, warp, g, group);
  float o_acc[Tr::kHeadDim / 8][4];
#pragma unroll
  for (int j = 0; j < Tr::kHeadDim / 8; ++j) o_acc[j][0] = o_acc[j][1] = o_acc[j][2] = o_acc[j][3] = 0.f;
  float row_max[2] = {-FLT_MAX, -FLT_MAX};
  float row_sum[2] = {0.f, 0.f};
  const float scale_log2 = p.scale * kLog2e;
  const unsigned char* q_wg = q_s + wg * (Tr::kQBytes / 2);
  float s[Tr::kBlockN / 8][4];
  float (&s_flat)[32] = reinterpret_cast<float(&)[32]>(s);
  float (&o_flat)[128] = reinterpret_cast<float(&)[128]>(o_acc);

  // Descriptors of Q and of each stage; a k16 step advances them by its offset / 16 (the address field's unit).
  const uint64_t q_desc = WgmmaDesc(q_wg, Tr::kChunkBytes, Tr::kGroupBytes);
  const uint64_t k_desc = WgmmaDesc(k_ring, Tr::kChunkBytes, Tr::kGroupBytes);
  // V is read N-major: core matrices are neighbours along K (keys) a group apart, along N (dims) a chunk apart.
  const uint64_t v_desc = WgmmaDesc(v_ring, Tr::kGroupBytes, Tr::kChunkBytes);
  // S = Q·Kᵀ of `tile` (issued; the caller waits). A k16 step is 2 core matrices along K.
  auto issue_scores = [&](int tile) {
    const uint64_t kd = k_desc + (tile & 1) * (Tr::kTileBytes / 16);
#pragma unroll
    for (int kk = 0; kk < Tr::kHeadDim / 16; ++kk) {
      constexpr int kStep = 2 * Tr::kChunkBytes / 16;
      WgmmaM64N64K16SS(s_flat, q_desc + kk * kStep, kd + kk * kStep, kk > 0);
    }
    WgmmaCommit();
  };
  // Masks S of `tile` (skipped when every row sees every key), then the online softmax: P fragments and corr.
  auto softmax = [&](int tile, uint32_t (&pfrag)[Tr::kBlockN / 16][4], float (&corr)[2]) {
#pragma unroll
    for (int i = 0; i < 32; ++i) PinRegister(s_flat[i]);
    const int key0 = tile0 + tile * Tr::kBlockN;
    const bool full_tile = key0 >= p.kv_begin && key0 + Tr::kBlockN <= p.kv_end &&
                           key0 + Tr::kBlockN - 1 <= qp_min && (p.window <= 0 || key0 > qp_max - p.window);
    if (!full_tile) {
#pragma unroll
      for (int j = 0; j < Tr::kBlockN / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int kcol = j * 8 + 2 * t + (e % 2);
          if (!Allowed(p, mine.qpos[e / 2], key0 + kcol, mine.block[e / 2], key_block[tile & 1][kcol])) {
            s[j][e] = -INFINITY;
          }
        }
      }
    }
    OnlineSoftmaxTile<Tr::kBlockN / 8>(s, row_max, row_sum, scale_log2, corr, pfrag);
  };

  uint32_t p_cur[Tr::kBlockN / 16][4], p_next[Tr::kBlockN / 16][4];
  float corr[2];
  if (num_tiles > 0) {
    CpAsyncWait<1>();   // Q and K of tile 0
    FenceProxyAsync();  // this thread's copies and zero fills, before the tensor cores read them
    __syncthreads();
    WgmmaFence();
    issue_scores(0);
    WgmmaWait<0>();
    softmax(0, p_cur, corr);
  }
  // O += P·V of `tile` (issued; the caller waits).
  auto issue_values = [&](int tile, uint32_t (&pfrag)[Tr::kBlockN / 16][4]) {
    const uint64_t vd = v_desc + (tile & 1) * (Tr::kTileBytes / 16);
#pragma unroll
    for (int kc = 0; kc < Tr::kBlockN / 16; ++kc) {  // a k16 step is 16 keys: 2 rows of core matrices
      WgmmaM64N256K16RS(o_flat, pfrag[kc], vd + kc * 2 * Tr::kGroupBytes / 16);
    }
    WgmmaCommit();
  };
  auto pin_values = [&](uint32_t (&pfrag)[Tr::kBlockN / 16][4]) {  // after the wait: O and the P it read
#pragma unroll
    for (int i = 0; i < 128; ++i) PinRegister(o_flat[i]);
#pragma unroll
    for (int kc = 0; kc < Tr::kBlockN / 16; ++kc) {
#pragma unroll
      for (int r = 0; r < 4; ++r) PinRegister(pfrag[kc][r]);
    }
  };
  // Step j (tile j + 1 exists): O += P_j·V_j runs on the tensor cores while the softmax of tile j + 1, whose scores
  // were issued just before, runs on the warps. No wgmma is issued or waited for under a branch, and P alternates
  // between two register sets instead of being copied: ptxas serialises the pipeline otherwise (warnings C7513,
  // C7514).
  auto step = [&](int j, uint32_t (&p_in)[Tr::kBlockN / 16][4], uint32_t (&p_out)[Tr::kBlockN / 16][4]) {
    set_key_blocks(j + 1);
    CpAsyncWait<0>();  // K of j + 1, V of j
    FenceProxyAsync();
    __syncthreads();   // also: both warpgroups are done with K of j and V of j - 1, the buffers loaded next
    if (j + 2 < num_tiles) LoadKeyCoreTile(p, k_head, p.k_slot_stride, tile0 + (j + 2) * Tr::kBlockN, k_stage(j));
    LoadKeyCoreTile(p, v_head, p.v_slot_stride, tile0 + (j + 1) * Tr::kBlockN, v_stage(j + 1));
    CpAsyncCommit();
    WgmmaFence();
    issue_scores(j + 1);
    issue_values(j, p_in);
    WgmmaWait<1>();  // the scores of j + 1; P_j·V_j may still run
    softmax(j + 1, p_out, corr);
    WgmmaWait<0>();
    pin_values(p_in);
    RescaleRows<Tr::kHeadDim / 8>(o_acc, corr);  // skipping it when every factor is 1 makes ptxas spill
  };
  int j = 0;
  for (; j + 2 < num_tiles; j += 2) {
    step(j, p_cur, p_next);
    step(j + 1, p_next, p_cur);
  }
  if (j + 1 < num_tiles) {
    step(j, p_cur, p_next);
    ++j;
#pragma unroll
    for (int kc = 0; kc < Tr::kBlockN / 16; ++kc) {
#pragma unroll
      for (int r = 0; r < 4; ++r) p_cur[kc][r] = p_next[kc][r];
    }
  }
  if (num_tiles > 0) {  // the last tile's P·V
    CpAsyncWait<0>();
    FenceProxyAsync();
    __syncthreads();
    WgmmaFence();
    issue_values(j, p_cur);
    WgmmaWait<0>();
    pin_values(p_cur);
  }
  CpAsyncWait<0>();

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 1);
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 2);
    const int row = mine.row[i];
    if (row >= total_rows) continue;
    const float inv = row_sum[i] > 0.f ? 1.f / row_sum[i] : 0.f;
    bf16* out = p.o + (row / group) * p.o_token_stride + (kv_head * group + row % group) * p.o_head_stride;
#pragma unroll
    for (int j = 0; j < Tr::kHeadDim / 8; ++j) {
      *reinterpret_cast<__nv_bfloat162*>(out + j * 8 + 2 * t) =
          __floats2bfloat162_rn(o_acc[j][2 * i] * inv, o_acc[j][2 * i + 1] * inv);
    }
  }
#else
  __trap();  // no sm_90a code: LaunchAttention does not pick this kernel (WgmmaAttentionOn)
#endif
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

// The warpgroup kernel (Note [Prefill attention on warpgroups]) runs on compute capability 9.0 when the backend
// was built with sm_90a code (engine/backend/cuda/CMakeLists.txt defines AVSERVE_CUDA_SM90A with it);
// AVSERVE_WGMMA_ATTENTION=0 keeps the mma.sync kernel (for measuring).
bool WgmmaAttentionApplies(const AttentionParams& p) {
  return p.allow_warpgroup && p.head_dim == WgmmaTraits::kHeadDim && p.num_splits == 1 &&
         p.kv_capacity >= WgmmaTraits::kBlockN;
}
bool WgmmaAttentionOn() {
  static const bool on = [] {
    int device = 0, major = 0, minor = 0;
    AVSERVE_CUDA_CHECK(cudaGetDevice(&device));
    AVSERVE_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    AVSERVE_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
#if defined(AVSERVE_CUDA_SM90A)
    return major == 9 && minor == 0 && EnvSwitchOn("AVSERVE_WGMMA_ATTENTION");
#else
    return false;
#endif
  }();
  return on;
}

void LaunchWgmmaAttention(const AttentionParams& p, cudaStream_t stream) {
  using Tr = WgmmaTraits;
  static const bool attribute_set = [] {
    AVSERVE_CUDA_CHECK(cudaFuncSetAttribute(WgmmaAttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(Tr::kSmemBytes)));
    return true;
  }();
  (void)attribute_set;
  const int group = p.num_heads / p.num_kv_heads;
  const dim3 grid((p.q_len * group + Tr::kBlockM - 1) / Tr::kBlockM, p.num_kv_heads);
  WgmmaAttentionKernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(p);
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
