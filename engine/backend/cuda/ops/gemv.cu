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
// (no shared-memory staging). Eight chunks (256 k) are loaded before any is used, so each thread has 256 bytes
// of w in flight; the first eight are loaded before the kernel waits for its input (Note [Dependent launch] in
// pdl.cuh). fp32 throughout, one rounding of the output (plus bias) at the end.
#include "engine/backend/cuda/ops/gemv.cuh"

#include <cstdint>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/device_utils.cuh"
#include "engine/backend/cuda/ops/mma.cuh"
#include "engine/backend/cuda/ops/pdl.cuh"

namespace avserve::engine::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kRowsPerCta = 16;
constexpr int kChunk = 32;    // k per 16-byte load of the four lanes of a row
constexpr int kUnroll = 8;    // chunks loaded before use: 256 k per warp iteration

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
template <int kN8, int kSplit>
__global__ void __launch_bounds__(kWarps * 32, 2) SkinnyGemmKernel(GemmParams p, int64_t lda, int64_t ldb,
                                                                   int64_t ldc) {
  constexpr int kTilesPerCta = kWarps / kSplit;
  __shared__ float partial[kSplit > 1 ? kWarps : 1][kN8][32][4];
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
  PdlWait();
  PdlLaunchDependents();
  const bf16* x_row[kN8];
  bool x_ok[kN8];
#pragma unroll
  for (int i = 0; i < kN8; ++i) {
    x_ok[i] = 8 * i + g < p.m;
    x_row[i] = p.a + (x_ok[i] ? 8 * i + g : 0) * lda + 8 * t;
  }
  float acc[kN8][4] = {};
  while (k0 + kStep <= p.k) {  // lo/hi hold the round at k0
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      U32x4 xs[kN8];
#pragma unroll
      for (int i = 0; i < kN8; ++i) xs[i] = x_ok[i] ? LoadAct(x_row[i] + k0 + u * kChunk) : zero;
      ChunkMma<kN8>(lo[u], hi[u], xs, acc);
    }
    k0 += int64_t{kSplit} * kStep;
    if (k0 + kStep <= p.k) load_round(k0);
  }
  // Tail: the chunks of the last partial 256-wide step, one per k part in turn.
  const int64_t tail0 = (p.k / kStep) * kStep;
  for (int64_t k = tail0 + int64_t{kp} * kChunk; k < p.k; k += int64_t{kSplit} * kChunk) {
    const U32x4 l1 = lo_ok ? LoadWeight(w_lo + k) : zero;
    const U32x4 h1 = hi_ok ? LoadWeight(w_hi + k) : zero;
    U32x4 xs[kN8];
#pragma unroll
    for (int i = 0; i < kN8; ++i) xs[i] = x_ok[i] ? LoadAct(x_row[i] + k) : zero;
    ChunkMma<kN8>(l1, h1, xs, acc);
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

int NumSms() {
  static const int sms = [] {
    int device = 0, count = 0;
    AVSERVE_CUDA_CHECK(cudaGetDevice(&device));
    AVSERVE_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    return count;
  }();
  return sms;
}

template <int kN8, int kSplit>
void Launch(const GemmParams& p, cudaStream_t stream) {
  const int64_t lda = p.lda != 0 ? p.lda : p.k, ldb = p.ldb != 0 ? p.ldb : p.k, ldc = p.ldc != 0 ? p.ldc : p.n;
  const int64_t tiles = (p.n + kRowsPerCta - 1) / kRowsPerCta;
  constexpr int kTilesPerCta = kWarps / kSplit;
  const unsigned blocks = static_cast<unsigned>((tiles + kTilesPerCta - 1) / kTilesPerCta);
  LaunchPdl(SkinnyGemmKernel<kN8, kSplit>, dim3(blocks), dim3(kWarps * 32), 0, stream, p, lda, ldb, ldc);
}

// k parts per row tile: enough warps for about one wave (two CTAs of 8 warps per SM), so that every warp has one
// equal share and no second, part-filled wave trails (Note [Skinny GEMM]).
template <int kN8>
void LaunchSplit(const GemmParams& p, cudaStream_t stream) {
  const int64_t tiles = (p.n + kRowsPerCta - 1) / kRowsPerCta;
  const int64_t want = int64_t{NumSms()} * 12;
  if (tiles >= want) {
    Launch<kN8, 1>(p, stream);
  } else if (2 * tiles >= want) {
    Launch<kN8, 2>(p, stream);
  } else if (4 * tiles >= want) {
    Launch<kN8, 4>(p, stream);
  } else {
    Launch<kN8, 8>(p, stream);
  }
}

}  // namespace

bool GemvApplies(const GemmParams& p) {
  const int64_t lda = p.lda != 0 ? p.lda : p.k, ldb = p.ldb != 0 ? p.ldb : p.k;
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  return p.m >= 1 && p.m <= kGemvMaxRows && !p.b_kn && p.k % kChunk == 0 && lda % 8 == 0 && ldb % 8 == 0 &&
         aligned(p.a) && aligned(p.b);
}

void LaunchGemv(const GemmParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(GemvApplies(p), "Gemv: unsupported shape");
  if (p.m <= 8) {
    LaunchSplit<1>(p, stream);
  } else {
    LaunchSplit<2>(p, stream);
  }
}

}  // namespace avserve::engine::cuda
