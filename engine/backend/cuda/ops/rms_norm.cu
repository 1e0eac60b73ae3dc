#include "engine/backend/cuda/ops/rms_norm.cuh"

#include <algorithm>
#include <cstdint>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/device_utils.cuh"
#include "engine/backend/cuda/ops/head_norm.cuh"
#include "engine/backend/cuda/ops/host_utils.cuh"
#include "engine/backend/cuda/ops/pdl.cuh"

namespace avserve::engine::cuda {
namespace {

constexpr int kThreads = 128;

// RoPE of one element of a normalized row `n` (bf16 values), position `pos`.
__device__ float RopeElement(const bf16* n, int j, int dim, int pos, float theta, int pairs) {
  const int half = dim / 2;
  const int jj = j < half ? j : j - half;
  const float xj = __bfloat162float(n[j]);
  if (jj >= pairs) return xj;  // inv_freq == 0: cos 1, sin 0, exact identity
  float c, s;
  RopeCosSin(pos, jj, dim, theta, &c, &s);
  const float partner = __bfloat162float(n[j < half ? j + half : j - half]);
  const float rotated = j < half ? -partner : partner;  // rotate_half
  return Bf16Round(xj * c) + Bf16Round(rotated * s);
}

__global__ void __launch_bounds__(kThreads) RmsNormKernel(RmsNormParams p) {
  extern __shared__ bf16 normed[];  // [dim], only used with RoPE
  __shared__ float scratch[kThreads / 32];
  const int row = blockIdx.x;
  const int token = row / p.heads;
  const int head = row % p.heads;
  const int64_t offset = token * p.token_stride + head * p.head_stride;
  const bf16* x = p.x + offset;
  float sum_sq = 0.f;
  for (int i = threadIdx.x * 8; i < p.dim; i += kThreads * 8) {
    float v[8];
    LoadBf16x8(x + i, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) sum_sq += v[k] * v[k];
  }
  const float inv_rms = rsqrtf(BlockSum(sum_sq, scratch) / static_cast<float>(p.dim) + p.eps);
  const bool scaled = p.out_scale != nullptr || p.host_scaled;
  const float scale = p.out_scale != nullptr ? __bfloat162float(p.out_scale[0]) : p.host_scale;
  const int64_t y_offset = token * (p.y_token_stride != 0 ? p.y_token_stride : p.token_stride) +
                           head * (p.y_head_stride != 0 ? p.y_head_stride : p.head_stride);
  bf16* y = p.y + y_offset;
  const bf16* res = p.residual != nullptr ? p.residual + y_offset : nullptr;
  if (p.positions != nullptr) {
    for (int i = threadIdx.x; i < p.dim; i += kThreads) {
      const float w = p.weight != nullptr ? __bfloat162float(p.weight[i]) : 1.f;
      normed[i] = __float2bfloat16(__bfloat162float(x[i]) * inv_rms * w);
    }
    __syncthreads();
    const int pos = p.positions[token];
    for (int i = threadIdx.x; i < p.dim; i += kThreads) {
      float v = Bf16Round(RopeElement(normed, i, p.dim, pos, p.rope_theta, p.rope_pairs));
      if (res != nullptr) v = Bf16Round(v + __bfloat162float(res[i]));
      if (scaled) v = v * scale;
      y[i] = __float2bfloat16(v);
    }
    return;
  }
  for (int i = threadIdx.x * 8; i < p.dim; i += kThreads * 8) {
    float v[8], w[8], r[8];
    LoadBf16x8(x + i, v);
    if (p.weight != nullptr) LoadBf16x8(p.weight + i, w);
    if (res != nullptr) LoadBf16x8(res + i, r);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      v[k] = Bf16Round(v[k] * inv_rms * (p.weight != nullptr ? w[k] : 1.f));
      if (res != nullptr) v[k] = Bf16Round(v[k] + r[k]);
      if (scaled) v[k] = v[k] * scale;
    }
    StoreBf16x8(y + i, v);
  }
}

// Rows of 256 or 512 dims (the q, k and v norms of attention), one warp per (token, head) row: lane l holds dims
// [8l, 8l + 8) of each 256-dim chunk in registers, so the rotate_half partner of a dim is in lane l ^ 16 (256
// dims) or in the same lane's other chunk (512). A block owns a range of consecutive rows (token-major): all rows
// of one token (or of 8 / rows tokens when a token has fewer than 8), or 8 rows when there are few tokens (decode:
// more blocks, less latency). RoPE's cos/sin depend on (position, pair) only, so the block computes them once per
// token and rotated pair, into shared memory, instead of once per head and dim. Same formulas and rounding points
// as RopeElement.
constexpr int kHeadWarps = 8;
// From this many tokens a block takes whole tokens (4 rows per warp for the sliding layers' 32 rows).
constexpr int kWholeTokenBlocksFrom = 1024;

// Row `head` of `token` in group p.
__device__ __forceinline__ HeadRow HeadRowOf(const RmsNormParams& p, int token, int head) {
  HeadRow h;
  h.x = p.x + token * p.token_stride + head * p.head_stride;
  h.y = p.y + token * (p.y_token_stride != 0 ? p.y_token_stride : p.token_stride) +
        head * (p.y_head_stride != 0 ? p.y_head_stride : p.head_stride);
  h.weight = p.weight;
  h.rope = p.positions != nullptr;
  h.eps = p.eps;
  return h;
}

// Row r of a token whose rows are a's heads, then b's, then c's.
__device__ __forceinline__ HeadRow HeadRowAt(const RmsNormParams& a, const RmsNormParams& b, const RmsNormParams& c,
                                             int token, int r) {
  if (r < a.heads) return HeadRowOf(a, token, r);
  if (r < a.heads + b.heads) return HeadRowOf(b, token, r - a.heads);
  return HeadRowOf(c, token, r - a.heads - b.heads);
}

// Whether rows [r0, r1) of one token hold a rotated row.
__device__ __forceinline__ bool RotatesAny(const RmsNormParams& a, const RmsNormParams& b, const RmsNormParams& c,
                                           int r0, int r1) {
  const int ab = a.heads + b.heads;
  return (a.positions != nullptr && r0 < a.heads) || (b.positions != nullptr && r0 < ab && r1 > a.heads) ||
         (c.positions != nullptr && r1 > ab);
}

// Up to three groups of heads normed in one launch (q and k with RoPE, v without: QkvNorm; or one group alone).
// A token's rows are a's heads, then b's, then c's; block b owns rows [g0, g1) of all tokens' rows, g0 =
// b * rows_per_block, spanning at most kHeadWarps tokens; warp w takes rows g0 + w, g0 + w + 8, ..., loading the
// next before norming the current. The groups may run in any order (the caller checked that no output overlaps
// another group's input); rotated groups share positions, theta and rotated pairs (checked by the launchers).
template <int kDim>
__global__ void __launch_bounds__(kHeadWarps * 32, kDim == 256 ? 4 : 3)
    HeadNormKernel(RmsNormParams a, RmsNormParams b, RmsNormParams c, int rows_per_block) {
  constexpr int kChunks = kDim / 256;
  __shared__ RopeTable<kDim> tables[kHeadWarps];  // of tokens t0, t0 + 1, ...
  const int rows = a.heads + b.heads + c.heads;   // per token
  const int g0 = static_cast<int>(blockIdx.x) * rows_per_block;
  const int g1 = min(a.tokens * rows, g0 + rows_per_block);
  const int t0 = g0 / rows, tokens = (g1 - 1) / rows - t0 + 1;
  int g = g0 + static_cast<int>(threadIdx.x / 32);
  PdlWait();  // weights are read per row below, after the wait (Note [Dependent launch])
  PdlLaunchDependents();
  HeadRow row;
  Bf16x8 x[kChunks];
  if (g < g1) {
    row = HeadRowAt(a, b, c, g / rows, g % rows);
    LoadHeadRow<kDim>(row, x);
  }
  // The RoPE of the first rotated group (the others share it); none for a block of v rows only.
  const bool a_rotates = a.positions != nullptr, b_rotates = b.positions != nullptr;
  const int pairs = a_rotates ? a.rope_pairs : b_rotates ? b.rope_pairs : c.rope_pairs;
  const bool rotates = tokens > 1 ? a_rotates || b_rotates || c.positions != nullptr
                                  : RotatesAny(a, b, c, g0 - t0 * rows, g1 - t0 * rows);
  if (rotates) {  // block-uniform
    const int32_t* positions = a_rotates ? a.positions : b_rotates ? b.positions : c.positions;
    const float theta = a_rotates ? a.rope_theta : b_rotates ? b.rope_theta : c.rope_theta;
    FillRopeTables<kDim>(positions + t0, tokens, theta, pairs, tables);
    __syncthreads();
  }
  for (; g < g1; g += kHeadWarps) {
    HeadRow next = row;
    Bf16x8 next_x[kChunks];
    if (g + kHeadWarps < g1) {
      next = HeadRowAt(a, b, c, (g + kHeadWarps) / rows, (g + kHeadWarps) % rows);
      LoadHeadRow<kDim>(next, next_x);
    }
    NormHeadRow<kDim>(row, x, pairs, tables[g / rows - t0]);
    row = next;
#pragma unroll
    for (int k = 0; k < kChunks; ++k) x[k] = next_x[k];
  }
}

// A block spans at most kHeadWarps tokens: 8 rows at a time span at most 8 tokens, whole tokens at most 8 / rows.
template <int kDim>
void LaunchHeadNorm(const RmsNormParams& a, const RmsNormParams& b, const RmsNormParams& c, cudaStream_t stream) {
  const int rows = a.heads + b.heads + c.heads;
  AVSERVE_CHECK(int64_t{a.tokens} * rows < (int64_t{1} << 31), "RmsNorm: too many rows");
  const int rows_per_block =
      a.tokens >= kWholeTokenBlocksFrom ? rows * std::max(1, kHeadWarps / rows) : kHeadWarps;
  const int blocks = (a.tokens * rows + rows_per_block - 1) / rows_per_block;
  LaunchPdl(HeadNormKernel<kDim>, dim3(static_cast<unsigned>(blocks)), dim3(kHeadWarps * 32), 0, stream, a, b, c,
            rows_per_block);
}

// One group alone: the other two have no heads.
void LaunchHeads(const RmsNormParams& p, cudaStream_t stream) {
  RmsNormParams none = p;
  none.heads = 0;
  if (p.dim == 256) {
    LaunchHeadNorm<256>(p, none, none, stream);
  } else {
    LaunchHeadNorm<512>(p, none, none, stream);
  }
}

bool HeadsKernelApplies(const RmsNormParams& p) {
  const auto div8 = [](int64_t v) { return v % 8 == 0; };
  return (p.dim == 256 || p.dim == 512) && p.residual == nullptr && p.out_scale == nullptr && !p.host_scaled &&
         div8(p.token_stride) && div8(p.head_stride) && div8(p.y_token_stride) && div8(p.y_head_stride) &&
         reinterpret_cast<uintptr_t>(p.x) % 16 == 0 && reinterpret_cast<uintptr_t>(p.y) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p.weight) % 16 == 0;
}

// Thread t holds the 8-element vectors (c * kThreads + t) of a row in registers, the split RmsNormKernel uses, so
// both sums of squares add in its order. The row, the weights and the updated residual stay in registers as packed
// bf16 (4 registers per 8 values, not 8 floats): at 3840 dims 80 registers instead of 153, so 6 blocks share an
// SM instead of 3 and keep twice the bytes in flight. A block loops over rows (grid of at most the blocks that fit
// the GPU at once); a decode row (grid = rows) costs one round trip to memory, x, residual and weight together.
//
// A few rows (decode) take blocks of kDecodeThreads with one vector a thread instead: then the next norm's weights
// are loaded with the rest at the start, so the row costs one trip to memory instead of two (the weights are not
// in L2: a decode step streams every weight through it).
template <int kChunks, int kT = kThreads>
__global__ void __launch_bounds__(kT, kChunks == 4 ? 6 : 1) RmsNormAddToNormKernel(RmsNormAddToNormParams p) {
  constexpr bool kEarlyNext = kChunks == 1;
  __shared__ float scratch[kT / 32];
  const auto index = [](int c) { return (c * kT + static_cast<int>(threadIdx.x)) * 8; };
  const auto in_row = [&p, &index](int c) { return index(c) < p.dim; };
  // One vector a thread: both weights are read before the wait, once (Note [Dependent launch]: weights only).
  Bf16x8 w_first[kEarlyNext ? kChunks : 1], nw_first[kEarlyNext ? kChunks : 1];
  if constexpr (kEarlyNext) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      if (!in_row(c)) continue;
      w_first[c] = *reinterpret_cast<const Bf16x8*>(p.weight + index(c));
      nw_first[c] = *reinterpret_cast<const Bf16x8*>(p.next_weight + index(c));
    }
  }
  PdlWait();
  PdlLaunchDependents();
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const bf16* x = p.x + row * p.x_stride;
    bf16* res = p.residual + row * p.residual_stride;
    bf16* y = p.y + row * p.y_stride;
    // rv: the residual row, then its updated values. The weights are read again per row (L1 hits): kept across
    // rows, the compiler keeps them unpacked, and the registers spill.
    Bf16x8 xv[kChunks], rv[kChunks], w[kChunks], nw[kChunks];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      if (!in_row(c)) continue;
      xv[c] = *reinterpret_cast<const Bf16x8*>(x + index(c));
      rv[c] = *reinterpret_cast<const Bf16x8*>(res + index(c));
      if constexpr (kEarlyNext) {
        w[c] = w_first[c];
        nw[c] = nw_first[c];
      } else {
        w[c] = *reinterpret_cast<const Bf16x8*>(p.weight + index(c));
      }
    }
    float sum_sq = 0.f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      if (!in_row(c)) continue;
      float v[8];
      UnpackBf16x8(xv[c], v);
#pragma unroll
      for (int k = 0; k < 8; ++k) sum_sq += v[k] * v[k];
    }
    const float inv_rms = rsqrtf(BlockSum(sum_sq, scratch) / static_cast<float>(p.dim) + p.eps);
    float next_sq = 0.f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      if (!in_row(c)) continue;
      float v[8], wf[8], r[8];
      UnpackBf16x8(xv[c], v);
      UnpackBf16x8(w[c], wf);
      UnpackBf16x8(rv[c], r);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        float t = Bf16Round(Bf16Round(v[k] * inv_rms * wf[k]) + r[k]);
        if (p.scaled) t = Bf16Round(t * p.scale);
        v[k] = t;  // bf16-exact: packing below loses nothing
        next_sq += t * t;
      }
      rv[c] = PackBf16x8(v);
      *reinterpret_cast<Bf16x8*>(res + index(c)) = rv[c];
    }
    if constexpr (!kEarlyNext) {
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {  // loaded while the block sums
        if (in_row(c)) nw[c] = *reinterpret_cast<const Bf16x8*>(p.next_weight + index(c));
      }
    }
    const float next_inv_rms = rsqrtf(BlockSum(next_sq, scratch) / static_cast<float>(p.dim) + p.eps);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      if (!in_row(c)) continue;
      float t[8], n[8];
      UnpackBf16x8(rv[c], t);
      UnpackBf16x8(nw[c], n);
#pragma unroll
      for (int k = 0; k < 8; ++k) n[k] = t[k] * next_inv_rms * n[k];
      StoreBf16x8(y + index(c), n);
    }
  }
}

// Blocks of `kernel` that run on the current GPU at once (grid of the row loops above).
template <typename Kernel>
int ResidentBlocks(Kernel kernel, int threads) {
  int device = 0, sms = 0, per_sm = 0;
  AVSERVE_CUDA_CHECK(cudaGetDevice(&device));
  AVSERVE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  AVSERVE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0));
  return std::max(1, sms * per_sm);
}

template <int kChunks>
void LaunchAddToNorm(const RmsNormAddToNormParams& p, cudaStream_t stream) {
  static const int resident = ResidentBlocks(RmsNormAddToNormKernel<kChunks>, kThreads);
  const unsigned blocks = static_cast<unsigned>(std::min(p.rows, resident));
  LaunchPdl(RmsNormAddToNormKernel<kChunks>, dim3(blocks), dim3(kThreads), 0, stream, p);
}

constexpr int kDecodeThreads = 1024;
constexpr int kDecodeRowsMax = 16;  // up to the 16 questions of a batched decode step

}  // namespace

bool RmsNormAddToNormApplies(const RmsNormAddToNormParams& p) {
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  return p.dim > 0 && p.dim % 8 == 0 && p.dim <= kMaxRmsNormAddToNormDim && p.x_stride % 8 == 0 &&
         p.residual_stride % 8 == 0 && p.y_stride % 8 == 0 && aligned(p.x) && aligned(p.weight) &&
         aligned(p.residual) && aligned(p.next_weight) && aligned(p.y);
}

void LaunchRmsNormAddToNorm(const RmsNormAddToNormParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(RmsNormAddToNormApplies(p), "RmsNormAddToNorm: dim or alignment not supported");
  if (p.rows == 0) return;
  static const bool decode_blocks = EnvSwitchOn("AVSERVE_NORM_DECODE");
  if (decode_blocks && p.rows <= kDecodeRowsMax && p.dim / 8 <= kDecodeThreads) {
    const int threads = (p.dim / 8 + 31) / 32 * 32;  // one vector a thread
    LaunchPdlWhen(NormPdlEnabled(), RmsNormAddToNormKernel<1, kDecodeThreads>, dim3(static_cast<unsigned>(p.rows)),
                  dim3(threads), 0, stream, p);
    return;
  }
  const int vectors_per_thread = (p.dim / 8 + kThreads - 1) / kThreads;
  if (vectors_per_thread <= 1) {
    LaunchAddToNorm<1>(p, stream);
  } else if (vectors_per_thread <= 2) {
    LaunchAddToNorm<2>(p, stream);
  } else if (vectors_per_thread <= 4) {
    LaunchAddToNorm<4>(p, stream);
  } else {
    LaunchAddToNorm<8>(p, stream);
  }
}

bool QkvNormApplies(const RmsNormParams& q, const RmsNormParams& k, const RmsNormParams& v) {
  // One RoPE table per token serves q and k: same positions, theta and rotated pairs.
  return q.dim == k.dim && k.dim == v.dim && HeadsKernelApplies(q) && HeadsKernelApplies(k) && HeadsKernelApplies(v) &&
         q.tokens == k.tokens && k.tokens == v.tokens && q.positions != nullptr && k.positions == q.positions &&
         k.rope_theta == q.rope_theta && k.rope_pairs == q.rope_pairs && q.rope_pairs <= q.dim / 2 &&
         v.positions == nullptr && v.weight == nullptr;
}

void LaunchQkvNorm(const RmsNormParams& q, const RmsNormParams& k, const RmsNormParams& v, cudaStream_t stream) {
  AVSERVE_CHECK(QkvNormApplies(q, k, v), "QkvNorm: unsupported layout");
  if (int64_t{q.tokens} * (q.heads + k.heads + v.heads) == 0) return;
  if (q.dim == 256) {
    LaunchHeadNorm<256>(q, k, v, stream);
  } else {
    LaunchHeadNorm<512>(q, k, v, stream);
  }
}

void LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.dim % 8 == 0 && p.dim > 0 && p.heads > 0, "RmsNorm: dim must be a positive multiple of 8");
  AVSERVE_CHECK(p.positions == nullptr || (p.dim % 2 == 0 && p.rope_pairs <= p.dim / 2), "RmsNorm: bad RoPE");
  if (p.tokens == 0) return;
  if (HeadsKernelApplies(p)) {
    LaunchHeads(p, stream);
    return;
  }
  const size_t smem = p.positions != nullptr ? p.dim * sizeof(bf16) : 0;
  RmsNormKernel<<<p.tokens * p.heads, kThreads, smem, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace avserve::engine::cuda
