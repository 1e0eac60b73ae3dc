#include "engine/backend/cuda/ops/attention_wgmma.cuh"

#include <cstdint>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/attention_mask.cuh"
#include "engine/backend/cuda/ops/device_utils.cuh"
#include "engine/backend/cuda/ops/host_utils.cuh"
#include "engine/backend/cuda/ops/mma.cuh"
#include "engine/backend/cuda/ops/online_softmax.cuh"
#include "engine/backend/cuda/ops/wgmma.cuh"

namespace avserve::engine::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;

// Note [Prefill attention on warpgroups]
// The sliding layers' prefill (head_dim 256, one KV split) on Hopper's warpgroup instructions. The mma.sync
// kernel of attention.cu reached ~127 TFLOP/s there: with 8 warps and 245 registers a thread, an SM holds two
// warps per scheduler, each warp re-reads whole K and V tiles through ldmatrix for its own 16 rows, and the
// ~2,100 instructions a warp issues per tile wait on each other (ncu, session 12). Here the same CTA (128 rows =
// (query position, head) pairs of one KV head, Note [Attention tiling] in attention.cu) is two warpgroups of 64
// rows:
// - S = Q·Kᵀ: 16 wgmma m64n64k16 per tile, Q and K read by the tensor cores from shared memory;
// - P stays in registers: the m64n64 accumulator of a warp is the mma.m16n8k16 layout, so the online softmax,
//   masks and rounding points are those of the mma.sync kernel (OnlineSoftmaxTile), and its bf16 P fragments are
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
  float o_acc[Tr::kHeadDim / 8][4], row_max[2], row_sum[2];
  StartOnlineRows(o_acc, row_max, row_sum);
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

}  // namespace avserve::engine::cuda
