// Weight-streaming products for a few rows: y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias) with m <= 16 (decode steps,
// batched questions).
//
// Note [Skinny GEMM]
// At a handful of rows the product is bound by reading w once, so the kernel is built around that read. Work
// comes in tiles of 16 rows of w (16 outputs per token), each split over 1-8 warps along k: as many as it takes
// to give about one wave of equal warp shares (many tiles: one warp each; few tiles: several, whose partial sums
// meet in shared memory). Each mma.m16n8k16 takes the 16 w rows as A and up to 8 tokens as B (a second n8 tile
// covers tokens 8-15), so one pass over w serves every token. k is permuted inside each 32-wide chunk: lane
// (g, t) loads 16 bytes of w rows g and g+8 and of x token g at k = 8t..8t+7, and feeds elements 8t..8t+3 to
// one mma (as its k slots 2t, 2t+1, 2t+8, 2t+9) and 8t+4..8t+7 to the next. A and B use the same permutation,
// so the sum is the same dot product, with 16-byte coalesced loads straight from global memory into registers
// (no shared-memory staging but Note [Staged second round]'s). Eight chunks (256 k) are loaded before any is used,
// so each thread has 256 bytes of w in flight; the first eight are loaded before the kernel waits for its input
// (Note [Dependent launch] in pdl.cuh). fp32 throughout, one rounding of the output (plus bias) at the end.
//
// Note [Staged second round]
// A decode step's o product waits behind the attention, a launch bound by its chain of dependent steps that leaves
// DRAM mostly idle for about 10 us; the q|k|v product waits behind a post norm (about 3.5 us). Launched early, each
// warp already held its first round of weights (8 KB) in registers before it waited. It now also copies its second
// round into shared memory (cp.async, 8 KB a warp, 64 KB a CTA) before the wait. So every CTA resident during the
// attention holds its whole share of a sliding layer's o product (k 4,096 split 8 ways: two rounds a warp) when the
// attention ends, and the q|k|v products (3.75 rounds a warp) start with half of theirs. Each lane reads back only
// the 16-byte pieces it copied, so no barrier is needed, and the sums are the same. Taken for 1-4 tokens and products
// of at most 4 rounds a warp (StageMaxRounds). On the H200 (session 17, alternated in one run): decode at 32K 7.327 /
// 7.320 ms against 7.470 / 7.482 without, 7.482 / 7.383 with the o products alone staged; staging every mma product
// (the 8-question step's long ones too) took that step from 8.50 to 8.73 ms.
#include "engine/backend/cuda/ops/gemv.cuh"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/device_utils.cuh"
#include "engine/backend/cuda/ops/host_utils.cuh"
#include "engine/backend/cuda/ops/mma.cuh"
#include "engine/backend/cuda/ops/pdl.cuh"

namespace avserve::engine::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kRowsPerCta = 16;
constexpr int kChunk = 32;    // k per 16-byte load of the four lanes of a row
constexpr int kUnroll = 8;    // chunks loaded before use: 256 k per warp iteration
constexpr int kRowStreamMaxRows = 4;  // tokens up to which rows stream (Note [Row-streaming products])
constexpr int kTwoAccsMaxRows = 4;    // tokens up to which the mma kernel keeps two accumulator sets (LaunchGemv)

struct alignas(16) U32x4 {
  uint32_t w[4];
};

// 16 bytes of w, streamed past L1 (each weight byte is read once per product).
__device__ __forceinline__ U32x4 LoadWeight(const bf16* p) {
  U32x4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r.w[0]), "=r"(r.w[1]), "=r"(r.w[2]), "=r"(r.w[3])
               : "l"(p));
  return r;
}

// Asks L2 for the line holding p (no register, no wait).
__device__ __forceinline__ void PrefetchL2(const bf16* p) { asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p)); }

__device__ __forceinline__ U32x4 LoadAct(const bf16* p) {
  const int4 v = __ldg(reinterpret_cast<const int4*>(p));
  return U32x4{{static_cast<uint32_t>(v.x), static_cast<uint32_t>(v.y), static_cast<uint32_t>(v.z),
                static_cast<uint32_t>(v.w)}};
}

// Two mmas for one 32-wide chunk: lo/hi are w rows g and g+8, xs[i] token g of n8 tile i.
template <int kN8>
__device__ __forceinline__ void ChunkMma(const U32x4& lo, const U32x4& hi, const U32x4 (&xs)[kN8],
                                         float (&acc)[kN8][4]) {
  const uint32_t a0[4] = {lo.w[0], hi.w[0], lo.w[1], hi.w[1]};
  const uint32_t a1[4] = {lo.w[2], hi.w[2], lo.w[3], hi.w[3]};
#pragma unroll
  for (int i = 0; i < kN8; ++i) {
    Mma16816(acc[i], a0, xs[i].w[0], xs[i].w[1]);
    Mma16816(acc[i], a1, xs[i].w[2], xs[i].w[3]);
  }
}

// Warp w of a CTA works on row tile w / kSplit of the CTA's 8 / kSplit tiles and on k part w % kSplit; the
// kSplit parts of a tile meet in shared memory (kSplit 1: each warp owns its tile and writes it directly).
// kAccs sets of accumulators take the round's chunks in turn, so the round's mmas form kAccs shorter chains of
// dependent instructions instead of one; the sets are added in order at the end (LaunchGemv says which pays).
// kStage: the warp's second round of weights is also copied before the wait, into shared memory (Note [Staged
// second round]).
template <int kN8, int kSplit, int kAccs, bool kStage>
__global__ void __launch_bounds__(kWarps * 32, 2) SkinnyGemmKernel(GemmParams p, int64_t lda, int64_t ldb,
                                                                   int64_t ldc) {
  constexpr int kTilesPerCta = kWarps / kSplit;
  __shared__ float partial[kSplit > 1 ? kWarps : 1][kN8][32][4];
  extern __shared__ U32x4 staged[];  // kStage: [kWarps][2][kUnroll][32], the warp's lo then hi rows
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4, kp = warp % kSplit;
  const int64_t row0 = (blockIdx.x * int64_t{kTilesPerCta} + warp / kSplit) * kRowsPerCta;
  const bool lo_ok = row0 + g < p.n, hi_ok = row0 + g + 8 < p.n;
  const bf16* w_lo = p.b + (lo_ok ? row0 + g : 0) * ldb + 8 * t;
  const bf16* w_hi = p.b + (hi_ok ? row0 + g + 8 : 0) * ldb + 8 * t;
  const U32x4 zero{{0u, 0u, 0u, 0u}};
  constexpr int kStep = kChunk * kUnroll;
  U32x4 lo[kUnroll], hi[kUnroll];
  auto load_round = [&](int64_t k0) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      lo[u] = lo_ok ? LoadWeight(w_lo + k0 + u * kChunk) : zero;
      hi[u] = hi_ok ? LoadWeight(w_hi + k0 + u * kChunk) : zero;
    }
  };
  // The first round of weights is read before waiting for the previous kernel (Note [Dependent launch]).
  int64_t k0 = int64_t{kp} * kStep;
  if (k0 + kStep <= p.k) load_round(k0);
  const int64_t k_staged = k0 + int64_t{kSplit} * kStep;
  const bool has_staged = kStage && k_staged + kStep <= p.k;
  U32x4* my_stage = staged + warp * 2 * kUnroll * 32 + lane;
  if (has_staged) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      // A row past n reads row 0, as load_round's zero fill stands for: its sums land in rows not stored.
      CpAsync16(my_stage + u * 32, w_lo + k_staged + u * kChunk);
      CpAsync16(my_stage + (kUnroll + u) * 32, w_hi + k_staged + u * kChunk);
    }
    CpAsyncCommit();
  }
  PdlWait();
  PdlLaunchDependents();
  const bf16* x_row[kN8];
  bool x_ok[kN8];
#pragma unroll
  for (int i = 0; i < kN8; ++i) {
    x_ok[i] = 8 * i + g < p.m;
    x_row[i] = p.a + (x_ok[i] ? 8 * i + g : 0) * lda + 8 * t;
  }
  float accs[kAccs][kN8][4] = {};
  while (k0 + kStep <= p.k) {  // lo/hi hold the round at k0
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      U32x4 xs[kN8];
#pragma unroll
      for (int i = 0; i < kN8; ++i) xs[i] = x_ok[i] ? LoadAct(x_row[i] + k0 + u * kChunk) : zero;
      ChunkMma<kN8>(lo[u], hi[u], xs, accs[u % kAccs]);
    }
    k0 += int64_t{kSplit} * kStep;
    if (has_staged && k0 == k_staged) {
      CpAsyncWait<0>();  // this thread's own copies: no barrier needed
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        lo[u] = lo_ok ? my_stage[u * 32] : zero;
        hi[u] = hi_ok ? my_stage[(kUnroll + u) * 32] : zero;
      }
    } else if (k0 + kStep <= p.k) {
      load_round(k0);
    }
  }
  // Tail: the chunks of the last partial 256-wide step, one per k part in turn.
  const int64_t tail0 = (p.k / kStep) * kStep;
  for (int64_t k = tail0 + int64_t{kp} * kChunk; k < p.k; k += int64_t{kSplit} * kChunk) {
    const U32x4 l1 = lo_ok ? LoadWeight(w_lo + k) : zero;
    const U32x4 h1 = hi_ok ? LoadWeight(w_hi + k) : zero;
    U32x4 xs[kN8];
#pragma unroll
    for (int i = 0; i < kN8; ++i) xs[i] = x_ok[i] ? LoadAct(x_row[i] + k) : zero;
    ChunkMma<kN8>(l1, h1, xs, accs[0]);
  }
  float (&acc)[kN8][4] = accs[0];
#pragma unroll
  for (int a = 1; a < kAccs; ++a) {
#pragma unroll
    for (int i = 0; i < kN8; ++i) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][e] += accs[a][i][e];
    }
  }
  // acc element e of lane (g, t) is w row g + 8 * (e / 2), token 8i + 2t + e % 2.
  auto store = [&](int64_t tile_row0, int i, int l, int e, float sum) {
    const int64_t row = tile_row0 + l / 4 + 8 * (e / 2);
    const int64_t token = 8 * i + 2 * (l % 4) + e % 2;
    if (row >= p.n || token >= p.m) return;
    if (p.bias != nullptr) sum += __bfloat162float(p.bias[row]);
    if (p.c_fp32) {
      static_cast<float*>(p.c)[token * ldc + row] = sum;
    } else {
      static_cast<bf16*>(p.c)[token * ldc + row] = __float2bfloat16(sum);
    }
  };
  if constexpr (kSplit == 1) {
#pragma unroll
    for (int i = 0; i < kN8; ++i) {
#pragma unroll
      for (int e = 0; e < 4; ++e) store(row0, i, lane, e, acc[i][e]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < kN8; ++i) {
#pragma unroll
      for (int e = 0; e < 4; ++e) partial[warp][i][lane][e] = acc[i][e];
    }
    __syncthreads();
    // One thread per (tile, i, lane, e) sums the tile's k parts in order.
    for (int idx = threadIdx.x; idx < kTilesPerCta * kN8 * 128; idx += kWarps * 32) {
      const int tile = idx / (kN8 * 128), i = (idx / 128) % kN8, l = (idx / 4) % 32, e = idx % 4;
      float sum = 0.f;
#pragma unroll
      for (int w = 0; w < kSplit; ++w) sum += partial[tile * kSplit + w][i][l][e];
      store((blockIdx.x * int64_t{kTilesPerCta} + tile) * kRowsPerCta, i, l, e, sum);
    }
  }
}

// The mma kernel stages its second round in products of at most this many rounds a warp (AVSERVE_GEMV_STAGE, to
// measure; 0: never). Longer products gain little from one round in shared memory and may lose L1 to it.
int StageMaxRounds() {
  static const int rounds = EnvCount("AVSERVE_GEMV_STAGE", 4, 0);
  return rounds;
}
constexpr size_t kStageBytes = size_t{kWarps} * 2 * kUnroll * 32 * sizeof(U32x4);  // 64 KB

template <int kN8, int kSplit, int kAccs>
void Launch(const GemmParams& p, cudaStream_t stream) {
  const int64_t lda = p.lda != 0 ? p.lda : p.k, ldb = p.ldb != 0 ? p.ldb : p.k, ldc = p.ldc != 0 ? p.ldc : p.n;
  const int64_t tiles = (p.n + kRowsPerCta - 1) / kRowsPerCta;
  constexpr int kTilesPerCta = kWarps / kSplit;
  const unsigned blocks = static_cast<unsigned>((tiles + kTilesPerCta - 1) / kTilesPerCta);
  // Staging pays only where the warp has a second round and the kernel launches early.
  constexpr int64_t kRoundK = int64_t{kSplit} * kChunk * kUnroll;  // k of one round of all of a tile's warps
  const int64_t rounds = (p.k + kRoundK - 1) / kRoundK;
  const bool early = ProductPdlEnabled();
  if (!early || p.m > kTwoAccsMaxRows || rounds < 2 || rounds > StageMaxRounds()) {
    LaunchPdlWhen(early, SkinnyGemmKernel<kN8, kSplit, kAccs, false>, dim3(blocks), dim3(kWarps * 32), 0, stream, p,
                  lda, ldb, ldc);
    return;
  }
  const auto kernel = SkinnyGemmKernel<kN8, kSplit, kAccs, true>;
  static const bool attributes_set = [kernel] {
    AVSERVE_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kStageBytes)));
    return true;
  }();
  (void)attributes_set;
  LaunchPdlWhen(true, kernel, dim3(blocks), dim3(kWarps * 32), kStageBytes, stream, p, lda, ldb, ldc);
}

// k parts per row tile: enough warps for about one wave (two CTAs of 8 warps per SM), so that every warp has one
// equal share and no second, part-filled wave trails (Note [Skinny GEMM]).
template <int kN8, int kAccs>
void LaunchSplit(const GemmParams& p, cudaStream_t stream) {
  const int64_t tiles = (p.n + kRowsPerCta - 1) / kRowsPerCta;
  const int64_t want = int64_t{NumSms()} * 12;
  if (tiles >= want) {
    Launch<kN8, 1, kAccs>(p, stream);
  } else if (2 * tiles >= want) {
    Launch<kN8, 2, kAccs>(p, stream);
  } else if (4 * tiles >= want) {
    Launch<kN8, 4, kAccs>(p, stream);
  } else {
    Launch<kN8, 8, kAccs>(p, stream);
  }
}

// Note [Row-streaming products]
// For one to four tokens the tensor cores buy nothing (the product is bound by reading w) and the mma tile's
// layout costs bandwidth: each load of the skinny kernel touches 8 rows of w at once. Here a lane loads 16 bytes
// of ONE row, a warp 512 contiguous bytes, and the products are plain fp32 FMAs. Work is counted in units of
// (2 rows, 256 k) in row-major order, and every warp of a persistent grid takes an equal contiguous run of
// units, so no warp trails a second part-filled wave. Four units of both rows are loaded before any is used. A
// tile that two or more warps' runs share is summed as Note [Shared tiles] says. Measured on the H200
// (bench/RESULTS.md, session 7): a decode step's 193 products and the head back to back, m = 1, 6.15 ms against
// 7.24 ms on the mma kernel; the engine's decode step at 32K, with the size rule of LaunchGemv, 8.48 / 8.55 ms
// against 9.00 / 9.04 ms (two alternating rounds in one run).
//
// Note [Shared tiles]
// A tile split between runs has one part per run; the run that holds the tile's first unit (the one whose run ends
// there) adds them in run order and writes the tile. Every other run stores its part in its own slot and goes on at
// once. Each slot is one float per sum, empty (kPartEmpty, a NaN no sum rounds to) between launches: the collector
// spins until a slot is written, reads it and empties it again, so the value is its own flag and no fence, counter or
// atomic is needed. The parts it waits for are mostly stored long before, as the first segments of later runs; a run
// wholly inside the tile ends about when the collector's does. A wait needs the awaited warp to run, so runs are handed
// to warps in reverse: the runs after a collector's belong to warps of lower index, in the same CTA or in CTAs
// dispatched no later than its own, so every chain of waits ends at a warp that waits for nothing (the forward-progress
// assumption of single-pass scans' look-back). The sum is the same in any timing, and the same as the counter it
// replaced gave. Measured on the H200 (session 19, bench/RESULTS.md): decode at 32K 6.98 / 6.99 ms against 7.27 / 7.20
// (alternated in one run) with a per-tile counter behind fences, the last warp to finish summing. Each alternated with
// that counter in its own run: a counter without the fences 7.08 / 7.11 ms, the tile's last run collecting at its own
// run's end 7.11 / 7.15, and a cooperative launch (co-residency guaranteed) 7.18 / 7.17, as it cannot start before the
// kernel ahead of it drains.
//
// Note [GeGLU in the product]
// A decode step's MLP took three launches: gate|up, the GeGLU of its two halves, down. The GeGLU launch costs
// more than its work: a few microseconds of start-up and drain for 15,360 values. Here the gate|up product's unit
// pairs gate row t with up row t (b's rows t and F + t) instead of two neighbouring rows, so the warp that ends
// tile t holds both sums of every token and writes the hidden value itself, rounded as the GeGLU kernel rounds
// (each sum to bf16 first, then GegluProduct): no second launch, no extra traffic. The values are not always
// the plain product's bits: where a warp's run of units ends inside a tile, that tile's two fp32 sums are split
// between warps at another k than the same rows are in the plain layout, so a sum can round to the neighbouring
// bf16 value (1-3 of 15,360 hidden values at the 12B shape). Session 12 folded the GeGLU into the end of the
// product the other way, keeping the two halves in separate tiles, so each pair's second tile had to find the
// first through a fence and an atomic; that cost more than the launch.

constexpr int kRowsPerUnit = 2;
constexpr int kUnitK = 256;  // 32 lanes x 8 elements
constexpr int kRowWarps = 8;
constexpr int64_t kMinRowStreamUnitsPerWarp = 20;  // below it, the mma kernel (LaunchGemv)
// CTAs per SM: 4 (64 registers) for one token; more tokens hold more sums and take 3 (85 registers).
template <int kM>
constexpr int kRowCtasPerSm = kM == 1 ? 4 : 3;

__device__ __forceinline__ float Dot8(const U32x4& w, const U32x4& x, float acc) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w.w[i]));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&x.w[i]));
    acc = fmaf(a.x, b.x, acc);
    acc = fmaf(a.y, b.y, acc);
  }
  return acc;
}

// Row tiles (kRowsPerUnit rows) of a product, and its (tile, 256 k) units.
int64_t RowTiles(const GemmParams& p) { return (p.n + kRowsPerUnit - 1) / kRowsPerUnit; }
int64_t RowUnits(const GemmParams& p) { return RowTiles(p) * (p.k / kUnitK); }

// What a row-streaming product writes: its sums, or the GeGLU of each pair (Note [GeGLU in the product]).
enum RowEpilogue { kPlainRows, kGegluRows };

struct RowStreamArgs {
  int64_t lda, ldb, ldc;
  int units_per_tile, total_units;  // RowStreamApplies keeps the count of units below 2^31
  float* parts;  // [2 * warps, kM * kRowsPerUnit], empty between launches (kPartEmpty)
  int prefetch_units;  // launched early (dependent launch): units of weights sent to L2 before the wait
  int64_t pair_rows = 0;  // kGegluRows: tile t is rows t (gate) and pair_rows + t (up) of b
};

// Units each warp of an early row-streaming product sends to L2 before it waits (AVSERVE_PREFETCH_UNITS, to measure).
// On the H200, decode at 32K alternated in one run: 4 against 12 in session 8 (8.157 / 8.198 ms against 8.267 /
// 8.291); 2 against 4 and 8 in session 17, with the staged products of Note [Staged second round] (7.119 / 7.126 ms
// against 7.157 / 7.169 and 7.221 / 7.217).
int PrefetchUnits() {
  static const int units = EnvCount("AVSERVE_PREFETCH_UNITS", 2, 0);
  return units;
}

// Row j of b in tile `tile` (a row past n reads the last one, unused).
template <int kEpi>
__device__ __forceinline__ const bf16* TileRow(const GemmParams& p, const RowStreamArgs& r, int tile, int j) {
  const int64_t row = kEpi == kGegluRows ? tile + j * r.pair_rows : min(int64_t{tile} * kRowsPerUnit + j, p.n - 1);
  return p.b + row * r.ldb;
}

// An empty part slot: all bits set, a NaN that no sum rounds to (the GPU's arithmetic NaN is 0x7fffffff).
constexpr uint32_t kPartEmpty = 0xffffffffu;

__device__ __forceinline__ void StorePart(float* p, float v) {
  asm volatile("st.relaxed.gpu.global.f32 [%0], %1;\n" ::"l"(p), "f"(v) : "memory");
}

// Waits until the part at p has been written, reads it and leaves the slot empty for the next launch.
__device__ __forceinline__ float TakePart(float* p) {
  float v;
  do {
    asm volatile("ld.relaxed.gpu.global.f32 %0, [%1];\n" : "=f"(v) : "l"(p) : "memory");
  } while (__float_as_uint(v) == kPartEmpty);
  StorePart(p, __uint_as_float(kPartEmpty));
  return v;
}

template <int kM, int kU, int kEpi>
__global__ void __launch_bounds__(kRowWarps * 32, kRowCtasPerSm<kM>) RowStreamKernel(GemmParams p, RowStreamArgs r) {
  constexpr int kOut = kM * kRowsPerUnit;  // sums per unit: (token, row)
  const int lane = threadIdx.x % 32;
  const int runs = gridDim.x * kRowWarps;
  // Runs go to warps in reverse, so that a warp only ever waits for warps of lower index (Note [Shared tiles]).
  const int run = runs - 1 - (blockIdx.x * kRowWarps + threadIdx.x / 32);
  const int ut = r.units_per_tile, total = r.total_units;
  auto start = [&](int w) { return static_cast<int>(int64_t{w} * total / runs); };
  // The run that holds `unit`.
  auto owner = [&](int unit) { return static_cast<int>((int64_t{unit + 1} * runs - 1) / total); };
  const int u_begin = start(run), u_end = start(run + 1);
  if (r.prefetch_units > 0 && u_begin < u_end) {  // weights only (Note [Dependent launch]): the kernel before runs
    const int tile = u_begin / ut, units = min(r.prefetch_units, min(u_end, (tile + 1) * ut) - u_begin);
    const int64_t k0 = int64_t{u_begin - tile * ut} * kUnitK + 8 * lane;
#pragma unroll
    for (int j = 0; j < kRowsPerUnit; ++j) {
      const bf16* w = TileRow<kEpi>(p, r, tile, j) + k0;
      for (int u = 0; u < units; ++u) PrefetchL2(w + u * kUnitK);
    }
  }
  PdlWait();
  PdlLaunchDependents();
  const bf16* x0 = p.a + 8 * lane;
  for (int seg = u_begin; seg < u_end;) {
    const int tile = seg / ut, seg_end = min(u_end, (tile + 1) * ut);
    const bf16* w_row[kRowsPerUnit];
#pragma unroll
    for (int j = 0; j < kRowsPerUnit; ++j) w_row[j] = TileRow<kEpi>(p, r, tile, j) + 8 * lane;
    float acc[kM][kRowsPerUnit] = {};
    // Batches of kU units; the last batch of a run loads only the units that are in it.
    const int k_end = (seg_end - tile * ut) * kUnitK;
    for (int k0 = (seg - tile * ut) * kUnitK; k0 < k_end; k0 += kU * kUnitK) {
      U32x4 wv[kRowsPerUnit][kU], xv[kM][kU];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const bool in = k0 + u * kUnitK < k_end;
#pragma unroll
        for (int j = 0; j < kRowsPerUnit; ++j) wv[j][u] = in ? LoadWeight(w_row[j] + k0 + u * kUnitK) : U32x4{};
#pragma unroll
        for (int i = 0; i < kM; ++i) xv[i][u] = in ? LoadAct(x0 + i * r.lda + k0 + u * kUnitK) : U32x4{};
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
#pragma unroll
        for (int i = 0; i < kM; ++i) {
#pragma unroll
          for (int j = 0; j < kRowsPerUnit; ++j) acc[i][j] = Dot8(wv[j][u], xv[i][u], acc[i][j]);
        }
      }
    }
    // Lane o (< kOut) ends up holding sum o = (token o / kRowsPerUnit, row o % kRowsPerUnit).
    float mine = 0.f;
#pragma unroll
    for (int i = 0; i < kM; ++i) {
#pragma unroll
      for (int j = 0; j < kRowsPerUnit; ++j) {
        float v = acc[i][j];
#pragma unroll
        for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
        if (lane == i * kRowsPerUnit + j) mine = v;
      }
    }
    seg = seg_end;
    const int first = owner(tile * ut), last = owner((tile + 1) * ut - 1);
    if (first != last) {  // a shared tile (Note [Shared tiles])
      // Slot 2w holds run w's part of the tile its run starts in, 2w + 1 of the tile it ends in.
      auto slot = [&](int w) { return 2 * w + (start(w) / ut == tile ? 0 : 1); };
      if (run != first) {
        if (lane < kOut) StorePart(r.parts + slot(run) * kOut + lane, mine);
        continue;
      }
      for (int w = first + 1; w <= last; ++w) {
        if (lane < kOut) mine += TakePart(r.parts + slot(w) * kOut + lane);
      }
    }
    const int64_t row = int64_t{tile} * kRowsPerUnit + lane % kRowsPerUnit, token = lane / kRowsPerUnit;
    if constexpr (kEpi == kGegluRows) {  // lane 2i holds token i's gate sum, lane 2i + 1 its up sum
      const float up = __shfl_down_sync(0xffffffffu, mine, 1);
      if (lane < kOut && lane % 2 == 0) {
        static_cast<bf16*>(p.c)[token * r.ldc + tile] = __float2bfloat16(GegluProduct(Bf16Round(mine), Bf16Round(up)));
      }
    } else if (lane < kOut && row < p.n) {
      if (p.bias != nullptr) mine += __bfloat162float(p.bias[row]);
      if (p.c_fp32) {
        static_cast<float*>(p.c)[token * r.ldc + row] = mine;
      } else {
        static_cast<bf16*>(p.c)[token * r.ldc + row] = __float2bfloat16(mine);
      }
    }
  }
}

// Per-stream part slots (a kernel of one stream must not take another's parts): a few hundred KB per stream, all
// empty, allocated at its first row-streaming product and kept for the process; every launch leaves them empty.
float* PartsFor(cudaStream_t stream) {
  return PerStreamScratch<float*>(stream, [](cudaStream_t st) {
    const size_t parts = size_t{2} * NumSms() * kRowCtasPerSm<1> * kRowWarps * kRowStreamMaxRows * kRowsPerUnit;
    float* p = nullptr;
    AVSERVE_CUDA_CHECK(cudaMalloc(&p, parts * sizeof(float)));
    AVSERVE_CUDA_CHECK(cudaMemsetAsync(p, 0xff, parts * sizeof(float), st));  // kPartEmpty
    return p;
  });
}

// `r` brings the epilogue's fields; the rest is filled here.
template <int kM, int kU, int kEpi>
void LaunchRowStream(const GemmParams& p, RowStreamArgs r, cudaStream_t stream) {
  r.lda = p.lda != 0 ? p.lda : p.k, r.ldb = p.ldb != 0 ? p.ldb : p.k, r.ldc = p.ldc != 0 ? p.ldc : p.n;
  r.units_per_tile = static_cast<int>(p.k / kUnitK);
  r.total_units = static_cast<int>(RowUnits(p));
  r.parts = PartsFor(stream);
  const bool early = ProductPdlEnabled();
  r.prefetch_units = early ? PrefetchUnits() : 0;
  // Every warp gets at least one unit (the slots count on it).
  const int64_t blocks = std::min<int64_t>(int64_t{NumSms()} * kRowCtasPerSm<kM>, r.total_units / kRowWarps);
  LaunchPdlWhen(early, RowStreamKernel<kM, kU, kEpi>, dim3(static_cast<unsigned>(blocks)), dim3(kRowWarps * 32), 0,
                stream, p, r);
}

template <int kEpi>
void LaunchRowStreamFor(const GemmParams& p, const RowStreamArgs& r, cudaStream_t stream) {
  switch (p.m) {
    case 1: return LaunchRowStream<1, 4, kEpi>(p, r, stream);
    case 2: return LaunchRowStream<2, 3, kEpi>(p, r, stream);
    case 3: return LaunchRowStream<3, 2, kEpi>(p, r, stream);
    default: return LaunchRowStream<4, 2, kEpi>(p, r, stream);
  }
}

bool RowStreamApplies(const GemmParams& p) {
  const int64_t units = RowUnits(p);
  return p.m <= kRowStreamMaxRows && p.k % kUnitK == 0 && units >= kRowWarps && units < (int64_t{1} << 31);
}

// Row streaming wins once each warp has a long run (H200, session 7: the 118-2,013 MB products, 20-230 units a
// warp); on the 31-67 MB ones (7-15 units) the mma kernel's whole tiles per warp were faster.
bool RowStreamPays(const GemmParams& p) {
  const int64_t warps = int64_t{NumSms()} * kRowCtasPerSm<1> * kRowWarps;
  return RowUnits(p) >= kMinRowStreamUnitsPerWarp * warps;
}

// AVSERVE_GEMV=mma or =rows picks that kernel wherever it applies instead of choosing by size (to measure).
GemvKernel KernelFromEnv() {
  static const GemvKernel kernel = [] {
    const char* v = std::getenv("AVSERVE_GEMV");
    const std::string s = v != nullptr ? v : "";
    return s == "mma" ? GemvKernel::kMma : s == "rows" ? GemvKernel::kRows : GemvKernel::kAuto;
  }();
  return kernel;
}

int MmaAccsFromEnv() {
  static const int accs = [] {
    const char* v = std::getenv("AVSERVE_GEMV_ACCS");
    return v != nullptr && std::string(v) == "1" ? 1 : 2;
  }();
  return accs;
}

}  // namespace

bool GemvApplies(const GemmParams& p) {
  const int64_t lda = p.lda != 0 ? p.lda : p.k, ldb = p.ldb != 0 ? p.ldb : p.k;
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  return p.m >= 1 && p.m <= kGemvMaxRows && !p.b_kn && p.k % kChunk == 0 && lda % 8 == 0 && ldb % 8 == 0 &&
         aligned(p.a) && aligned(p.b);
}

void LaunchGemv(const GemmParams& p, cudaStream_t stream, GemvKernel kernel) {
  AVSERVE_CHECK(GemvApplies(p), "Gemv: unsupported shape");
  if (kernel == GemvKernel::kAuto) kernel = KernelFromEnv();
  if (kernel == GemvKernel::kAuto) kernel = RowStreamPays(p) ? GemvKernel::kRows : GemvKernel::kMma;
  if (kernel == GemvKernel::kRows && RowStreamApplies(p)) {
    return LaunchRowStreamFor<kPlainRows>(p, RowStreamArgs{}, stream);
  }
  // Two accumulator sets for 1-4 tokens (H200, gemv_bench: a step's products on this kernel 7.17 against
  // 7.23 ms at one token) and one beyond (6.87 against 7.10 ms at 8 tokens; two spill at 9-16).
  // AVSERVE_GEMV_ACCS=1 takes one set everywhere (to measure).
  if (p.m <= kTwoAccsMaxRows && MmaAccsFromEnv() == 2) return LaunchSplit<1, 2>(p, stream);
  if (p.m <= 8) return LaunchSplit<1, 1>(p, stream);
  LaunchSplit<2, 1>(p, stream);
}

// Taken only for products that would stream rows anyway (and not while AVSERVE_GEMV=mma says otherwise), so
// fusing never changes which kernel reads the weights.
bool GemvGegluApplies(const GemmParams& p) {
  return GemvApplies(p) && RowStreamApplies(p) && RowStreamPays(p) && KernelFromEnv() != GemvKernel::kMma &&
         p.n % 2 == 0 && p.bias == nullptr && !p.c_fp32;
}

void LaunchGemvGeglu(const GemmParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(GemvGegluApplies(p), "GemvGeglu: unsupported shape");
  GemmParams q = p;
  if (q.ldc == 0) q.ldc = p.n / 2;
  RowStreamArgs r;
  r.pair_rows = p.n / 2;
  LaunchRowStreamFor<kGegluRows>(q, r, stream);
}

}  // namespace avserve::engine::cuda
